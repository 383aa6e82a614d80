"""ISO 3166-1 country codes, embedded so that `country_code` works offline.

Holds the alpha-2 and alpha-3 codes and the English short names of ISO 3166-1 (plus XK, Kosovo,
which billing systems accept as a user-assigned code), and a few aliases people type into Salesforce's free-text country fields.
It must never guess: a value it cannot name exactly gives "" (unset), never a wrong country.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache, lru_cache

# alpha-2, alpha-3, English short name (ISO 3166-1, names simplified the way people write them).
_TABLE = """\
AD AND Andorra
AE ARE United Arab Emirates
AF AFG Afghanistan
AG ATG Antigua and Barbuda
AI AIA Anguilla
AL ALB Albania
AM ARM Armenia
AO AGO Angola
AQ ATA Antarctica
AR ARG Argentina
AS ASM American Samoa
AT AUT Austria
AU AUS Australia
AW ABW Aruba
AX ALA Aland Islands
AZ AZE Azerbaijan
BA BIH Bosnia and Herzegovina
BB BRB Barbados
BD BGD Bangladesh
BE BEL Belgium
BF BFA Burkina Faso
BG BGR Bulgaria
BH BHR Bahrain
BI BDI Burundi
BJ BEN Benin
BL BLM Saint Barthelemy
BM BMU Bermuda
BN BRN Brunei Darussalam
BO BOL Bolivia
BQ BES Bonaire, Sint Eustatius and Saba
BR BRA Brazil
BS BHS Bahamas
BT BTN Bhutan
BV BVT Bouvet Island
BW BWA Botswana
BY BLR Belarus
BZ BLZ Belize
CA CAN Canada
CC CCK Cocos (Keeling) Islands
CD COD Democratic Republic of the Congo
CF CAF Central African Republic
CG COG Congo
CH CHE Switzerland
CI CIV Cote d'Ivoire
CK COK Cook Islands
CL CHL Chile
CM CMR Cameroon
CN CHN China
CO COL Colombia
CR CRI Costa Rica
CU CUB Cuba
CV CPV Cabo Verde
CW CUW Curacao
CX CXR Christmas Island
CY CYP Cyprus
CZ CZE Czechia
DE DEU Germany
DJ DJI Djibouti
DK DNK Denmark
DM DMA Dominica
DO DOM Dominican Republic
DZ DZA Algeria
EC ECU Ecuador
EE EST Estonia
EG EGY Egypt
EH ESH Western Sahara
ER ERI Eritrea
ES ESP Spain
ET ETH Ethiopia
FI FIN Finland
FJ FJI Fiji
FK FLK Falkland Islands
FM FSM Micronesia
FO FRO Faroe Islands
FR FRA France
GA GAB Gabon
GB GBR United Kingdom
GD GRD Grenada
GE GEO Georgia
GF GUF French Guiana
GG GGY Guernsey
GH GHA Ghana
GI GIB Gibraltar
GL GRL Greenland
GM GMB Gambia
GN GIN Guinea
GP GLP Guadeloupe
GQ GNQ Equatorial Guinea
GR GRC Greece
GS SGS South Georgia and the South Sandwich Islands
GT GTM Guatemala
GU GUM Guam
GW GNB Guinea-Bissau
GY GUY Guyana
HK HKG Hong Kong
HM HMD Heard Island and McDonald Islands
HN HND Honduras
HR HRV Croatia
HT HTI Haiti
HU HUN Hungary
ID IDN Indonesia
IE IRL Ireland
IL ISR Israel
IM IMN Isle of Man
IN IND India
IO IOT British Indian Ocean Territory
IQ IRQ Iraq
IR IRN Iran
IS ISL Iceland
IT ITA Italy
JE JEY Jersey
JM JAM Jamaica
JO JOR Jordan
JP JPN Japan
KE KEN Kenya
KG KGZ Kyrgyzstan
KH KHM Cambodia
KI KIR Kiribati
KM COM Comoros
KN KNA Saint Kitts and Nevis
KP PRK North Korea
KR KOR South Korea
KW KWT Kuwait
KY CYM Cayman Islands
KZ KAZ Kazakhstan
LA LAO Laos
LB LBN Lebanon
LC LCA Saint Lucia
LI LIE Liechtenstein
LK LKA Sri Lanka
LR LBR Liberia
LS LSO Lesotho
LT LTU Lithuania
LU LUX Luxembourg
LV LVA Latvia
LY LBY Libya
MA MAR Morocco
MC MCO Monaco
MD MDA Moldova
ME MNE Montenegro
MF MAF Saint Martin (French part)
MG MDG Madagascar
MH MHL Marshall Islands
MK MKD North Macedonia
ML MLI Mali
MM MMR Myanmar
MN MNG Mongolia
MO MAC Macao
MP MNP Northern Mariana Islands
MQ MTQ Martinique
MR MRT Mauritania
MS MSR Montserrat
MT MLT Malta
MU MUS Mauritius
MV MDV Maldives
MW MWI Malawi
MX MEX Mexico
MY MYS Malaysia
MZ MOZ Mozambique
NA NAM Namibia
NC NCL New Caledonia
NE NER Niger
NF NFK Norfolk Island
NG NGA Nigeria
NI NIC Nicaragua
NL NLD Netherlands
NO NOR Norway
NP NPL Nepal
NR NRU Nauru
NU NIU Niue
NZ NZL New Zealand
OM OMN Oman
PA PAN Panama
PE PER Peru
PF PYF French Polynesia
PG PNG Papua New Guinea
PH PHL Philippines
PK PAK Pakistan
PL POL Poland
PM SPM Saint Pierre and Miquelon
PN PCN Pitcairn
PR PRI Puerto Rico
PS PSE Palestine
PT PRT Portugal
PW PLW Palau
PY PRY Paraguay
QA QAT Qatar
RE REU Reunion
RO ROU Romania
RS SRB Serbia
RU RUS Russia
RW RWA Rwanda
SA SAU Saudi Arabia
SB SLB Solomon Islands
SC SYC Seychelles
SD SDN Sudan
SE SWE Sweden
SG SGP Singapore
SH SHN Saint Helena, Ascension and Tristan da Cunha
SI SVN Slovenia
SJ SJM Svalbard and Jan Mayen
SK SVK Slovakia
SL SLE Sierra Leone
SM SMR San Marino
SN SEN Senegal
SO SOM Somalia
SR SUR Suriname
SS SSD South Sudan
ST STP Sao Tome and Principe
SV SLV El Salvador
SX SXM Sint Maarten (Dutch part)
SY SYR Syria
SZ SWZ Eswatini
TC TCA Turks and Caicos Islands
TD TCD Chad
TF ATF French Southern Territories
TG TGO Togo
TH THA Thailand
TJ TJK Tajikistan
TK TKL Tokelau
TL TLS Timor-Leste
TM TKM Turkmenistan
TN TUN Tunisia
TO TON Tonga
TR TUR Turkey
TT TTO Trinidad and Tobago
TV TUV Tuvalu
TW TWN Taiwan
TZ TZA Tanzania
UA UKR Ukraine
UG UGA Uganda
UM UMI United States Minor Outlying Islands
US USA United States
UY URY Uruguay
UZ UZB Uzbekistan
VA VAT Holy See
VC VCT Saint Vincent and the Grenadines
VE VEN Venezuela
VG VGB British Virgin Islands
VI VIR U.S. Virgin Islands
VN VNM Viet Nam
VU VUT Vanuatu
WF WLF Wallis and Futuna
WS WSM Samoa
XK XKX Kosovo
YE YEM Yemen
YT MYT Mayotte
ZA ZAF South Africa
ZM ZMB Zambia
ZW ZWE Zimbabwe
"""

# Other ways people write a country (official names, local names, old names). Keys are written
# as people do; they are normalised like the input before the lookup.
ALIASES: dict[str, str] = {
    "United States of America": "US",
    "America": "US",
    "U.S.": "US",
    "U.S.A.": "US",
    "Vereinigte Staaten": "US",
    "Great Britain": "GB",
    "Britain": "GB",
    "UK": "GB",
    "U.K.": "GB",
    "England": "GB",
    "Scotland": "GB",
    "Wales": "GB",
    "Northern Ireland": "GB",
    "United Kingdom of Great Britain and Northern Ireland": "GB",
    "Deutschland": "DE",
    "Federal Republic of Germany": "DE",
    "Allemagne": "DE",
    "Österreich": "AT",
    "Schweiz": "CH",
    "Suisse": "CH",
    "Svizzera": "CH",
    "España": "ES",
    "Italia": "IT",
    "Nederland": "NL",
    "Holland": "NL",
    "The Netherlands": "NL",
    "België": "BE",
    "Belgique": "BE",
    "Danmark": "DK",
    "Norge": "NO",
    "Sverige": "SE",
    "Suomi": "FI",
    "Polska": "PL",
    "Česko": "CZ",
    "Czech Republic": "CZ",
    "Magyarország": "HU",
    "Éire": "IE",
    "Republic of Ireland": "IE",
    "Brasil": "BR",
    "México": "MX",
    "Nippon": "JP",
    "Russian Federation": "RU",
    "Korea": "KR",
    "Republic of Korea": "KR",
    "Korea, Republic of": "KR",
    "Korea, Democratic People's Republic of": "KP",
    "Vietnam": "VN",
    "Ivory Coast": "CI",
    "Cape Verde": "CV",
    "Swaziland": "SZ",
    "Macedonia": "MK",
    "Burma": "MM",
    "East Timor": "TL",
    "Turkiye": "TR",
    "Türkiye": "TR",
    "Iran, Islamic Republic of": "IR",
    "Syrian Arab Republic": "SY",
    "Lao People's Democratic Republic": "LA",
    "Moldova, Republic of": "MD",
    "Tanzania, United Republic of": "TZ",
    "Bolivia, Plurinational State of": "BO",
    "Venezuela, Bolivarian Republic of": "VE",
    "Taiwan, Province of China": "TW",
    "Republic of China": "TW",
    "People's Republic of China": "CN",
    "PRC": "CN",
    "Hong Kong SAR": "HK",
    "Macau": "MO",
    "Vatican": "VA",
    "Vatican City": "VA",
    "DR Congo": "CD",
    "DRC": "CD",
    "Congo, Democratic Republic of the": "CD",
    "Republic of the Congo": "CG",
    "Congo-Brazzaville": "CG",
    "Micronesia, Federated States of": "FM",
    "Palestine, State of": "PS",
    "Falkland Islands (Malvinas)": "FK",
    "UAE": "AE",
    "Emirates": "AE",
    "Virgin Islands, British": "VG",
    "Virgin Islands, U.S.": "VI",
    "US Virgin Islands": "VI",
    "Brunei": "BN",
    "Czechoslovakia": "",  # gone: two countries now, so no guess
}


def _normalise(text: str) -> str:
    """Case, accents, punctuation and spacing do not matter: 'U.S.A.' == 'usa', 'Curaçao' == 'curacao'."""
    decomposed = unicodedata.normalize("NFKD", text)
    no_marks = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    lowered = no_marks.casefold().replace("&", " and ")
    words = re.sub(r"[^0-9a-z]+", " ", lowered).split()
    if words and words[0] == "the":
        words = words[1:]
    return " ".join(words)


@cache
def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for row in _TABLE.splitlines():
        alpha2, alpha3, name = row[:2], row[3:6], row[7:]
        index[_normalise(alpha2)] = alpha2
        index[_normalise(alpha3)] = alpha2
        index[_normalise(name)] = alpha2
    for alias, code in ALIASES.items():
        index[_normalise(alias)] = code
    return index


def alpha2_codes() -> frozenset[str]:
    """Every alpha-2 code the table knows."""
    return frozenset(code for code in _index().values() if code)


def to_alpha2(text: str) -> str:
    """ISO 3166-1 alpha-2 for a code (alpha-2 or alpha-3) or an English (or alias) name; else ""."""
    if len(text) > 200:  # no country name is this long; do not normalise megabytes
        return ""
    return _to_alpha2(text)


@lru_cache(maxsize=4096)
def _to_alpha2(text: str) -> str:
    # Per record and per address: an org spells its countries a few ways, each normalised once.
    return _index().get(_normalise(text), "")
