"""What Locust loads: ``locust -f loadtest/locust/locustfile.py --host http://127.0.0.1:8000``.

The shop's API key comes from ``--api-key`` or ``REKINDLE_LOADTEST_API_KEY``; the rehearsal's
settings from ``--kit`` (default ``loadtest/memberday.toml``), overridden by ``--shape``,
``--kit-users``, ``--kit-duration`` and ``--spike``. With no ``-u``/``-t`` the shape drives the
crowd: ``MemberDay`` follows the chosen shape and stops the run at its end.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from locust import LoadTestShape, events

from loadtest.locust import kit as kit_module
from loadtest.locust.users import SETTINGS, AppMember, ShopBackend

__all__ = ["ShopBackend", "AppMember", "MemberDay"]


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    parser.add_argument("--api-key", default=os.environ.get("REKINDLE_LOADTEST_API_KEY", ""), help="the shop's API key")
    parser.add_argument("--kit", default=str(kit_module.DEFAULT_CONFIG), help="the rehearsal's TOML")
    parser.add_argument("--shape", default=None, help="member_day or steady (default: the TOML's)")
    parser.add_argument("--kit-users", type=int, default=None, help="the base crowd (default: the TOML's)")
    parser.add_argument("--kit-duration", type=float, default=None, help="seconds of the whole day")
    parser.add_argument("--spike", type=float, default=None, help="member_day's spike, times the base crowd")
    parser.add_argument("--redeem-item", default="tea-voucher-20", help="the catalog item app members redeem")


@events.init.add_listener
def _init(environment: Any, **_: Any) -> None:
    o = environment.parsed_options
    if o is None:
        return
    kit = kit_module.load(
        Path(o.kit), o.shape, {"users": o.kit_users, "duration_s": o.kit_duration, "spike": o.spike}
    )
    SETTINGS.update(kit=kit, api_key=o.api_key, redeem_item=o.redeem_item)
    ShopBackend.weight, AppMember.weight = kit.shop_users, kit.app_users


class MemberDay(LoadTestShape):
    """The kit's shape (``--shape``): users and spawn rate by elapsed time; None ends the run."""

    def tick(self) -> tuple[int, float] | None:
        return SETTINGS["kit"].shape.at(self.get_run_time())
