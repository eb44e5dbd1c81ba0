"""The monitor's settings, from the environment."""

from __future__ import annotations

import pytest

from services.observability import MonitorSettings
from services.settings import SettingsError


def test_other_groups_to_watch_are_read_from_the_environment() -> None:
    settings = MonitorSettings.from_env({
        "RESERVES_MONITOR_GROUPS": "erp-connector=reserve.events, crm = order.status",
        "RESERVES_READY_MAX_PROJECTION_LAG": "50"})
    assert settings.groups == (("erp-connector", "reserve.events"), ("crm", "order.status"))
    assert settings.ready_max_projection_lag == 50
    assert MonitorSettings.from_env({}).groups == ()
    with pytest.raises(SettingsError, match="group=topic"):
        MonitorSettings.from_env({"RESERVES_MONITOR_GROUPS": "crm"})
