"""The daemon's config sections (schedule, health, alerts): bad values name file, line and key;
the alert webhook URL (a token) is refused in YAML."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector.config import load_config
from connector.errors import ConfigError

BASE = """\
salesforce:
  auth: access_token
  instance_url: http://127.0.0.1:1
"""


def write(tmp_path: Path, extra: str) -> Path:
    f = tmp_path / "config.yaml"
    f.write_text(BASE + extra)
    return f


def test_schedule_defaults_to_every_five_minutes(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, ""))
    assert cfg.schedule.interval_seconds == 300
    assert cfg.health.host == "127.0.0.1" and cfg.health.port is None


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("2h", 7200)])
def test_every_takes_seconds_minutes_and_hours(tmp_path: Path, text: str, seconds: int) -> None:
    cfg = load_config(write(tmp_path, f"schedule:\n  every: {text}\n"))
    assert cfg.schedule.interval_seconds == seconds


def test_a_cron_schedule_has_no_interval(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, 'schedule:\n  cron: "*/5 * * * *"\n'))
    assert cfg.schedule.cron == "*/5 * * * *" and cfg.schedule.interval_seconds is None


@pytest.mark.parametrize(
    ("extra", "line", "key", "says"),
    [
        ("schedule:\n  every: 5 minutes\n", 5, "schedule.every", "30s, 5m or 1h"),
        ('schedule:\n  cron: "*/5 * *"\n', 5, "schedule.cron", "crontab"),
        ('schedule:\n  every: 5m\n  cron: "* * * * *"\n', 4, "schedule", "not both"),
        ('schedule:\n  nightly_recheck: "25:00"\n', 5, "schedule.nightly_recheck", "match"),
        ("health:\n  port: 70000\n", 5, "health.port", "65535"),
    ],
)
def test_a_bad_daemon_setting_names_file_line_and_key(
    tmp_path: Path, extra: str, line: int, key: str, says: str
) -> None:
    f = write(tmp_path, extra)
    with pytest.raises(ConfigError) as caught:
        load_config(f)
    err = caught.value
    assert err.file == f and err.line == line and err.key == key, str(err)
    assert says in str(err)


def test_a_slack_webhook_url_in_yaml_is_refused_with_the_variable_to_use(tmp_path: Path) -> None:
    f = write(
        tmp_path,
        "alerts:\n  webhook_url: https://hooks.slack.com/services/T0/B0/abcdefgh\n",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(f)
    assert "BILLING_CONNECTOR_ALERT_WEBHOOK_URL" in str(caught.value)
    assert caught.value.line == 5
    assert "abcdefgh" not in str(caught.value)


@pytest.mark.parametrize(
    ("cron", "minutes"), [("*/5 * * * *", 5), ("0 * * * *", 60), ("30 3 * * *", 24 * 60)]
)
def test_a_cron_schedules_interval_is_the_gap_between_two_firings(
    tmp_path: Path, cron: str, minutes: int
) -> None:
    from datetime import timedelta

    from connector.daemon import schedule_interval

    cfg = load_config(write(tmp_path, f'schedule:\n  cron: "{cron}"\n'))
    assert schedule_interval(cfg) == timedelta(minutes=minutes)
