"""Planning: units grouped by image, sized, with ids that depend only on content and settings."""

from __future__ import annotations

from dataclasses import replace

import pytest

from harvest.errors import ConfigError
from harvest.inputs import Program
from harvest.plan import HarvestSettings, plan_units


def programs(n: int, image: str | None = None) -> list[Program]:
    return [Program(program_id=f"p{i}", mode="script", source=f"print({i})\n", image=image) for i in range(n)]


def test_units_are_grouped_by_image_and_sized() -> None:
    settings = HarvestSettings(image="base-py311", programs_per_unit=4)
    units = plan_units(programs(10) + programs(3, image="base-py313"), settings)
    assert [(u.image, len(u)) for u in units] == [("base-py311", 4), ("base-py311", 4), ("base-py311", 2), ("base-py313", 3)]
    assert [p.program_id for p in units[2].programs] == ["p8", "p9"]
    assert len({u.unit_id for u in units}) == 4
    assert all(u.shard_name == f"unit-{u.unit_id}.parquet" for u in units)


def test_the_same_command_plans_the_same_units() -> None:
    settings = HarvestSettings(programs_per_unit=3)
    first = plan_units(programs(7), settings)
    again = plan_units(programs(7), HarvestSettings(programs_per_unit=3))
    assert [u.unit_id for u in first] == [u.unit_id for u in again]


def test_ids_change_with_content_and_trace_settings_but_not_the_origin() -> None:
    settings = HarvestSettings(programs_per_unit=3)
    base = [u.unit_id for u in plan_units(programs(3), settings)]
    moved = [replace(p, origin="elsewhere.jsonl:9") for p in programs(3)]
    assert [u.unit_id for u in plan_units(moved, settings)] == base
    edited = programs(3)
    edited[1] = replace(edited[1], source="print('changed')\n")
    assert plan_units(edited, settings)[0].unit_id != base[0]
    assert plan_units(programs(3), replace(settings, backend="settrace"))[0].unit_id != base[0]
    assert plan_units(programs(3), replace(settings, unit_timeout_s=5.0))[0].unit_id == base[0]
    # the run's list of images is for the manifest: each unit's id names its own image already
    assert plan_units(programs(3), replace(settings, images=("base-py311", "base-py313")))[0].unit_id == base[0]


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="--programs-per-unit"):
        HarvestSettings(programs_per_unit=0)
    with pytest.raises(ConfigError, match="--timeout"):
        HarvestSettings(timeout_s=0)
