"""Price files: loading at start, reloading on change, keeping the last good prices when a change is bad."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from decimal import Decimal
from pathlib import Path

import pytest
from spendmeter_proxy.pricebooks import PriceBook
from spendmeter_proxy.pricewatching import PriceSource, load_builtin_pricebooks
from spendmeter_proxy.usage import Usage

ONE_MILLION_IN = Usage(input_tokens=1_000_000)


def house_price(rate: str) -> str:
    return f"models: [{{model: house-llm, perMillionTokens: {{input: {rate}, output: 1}}}}]\n"


def cost(source: PriceSource, model: str = "house-llm") -> Decimal | None:
    price = source.table.price("openai", model, ONE_MILLION_IN)
    return None if price is None else price.cost_usd


def rewrite(path: Path, text: str) -> None:
    """Write like an editor or ConfigMap update would: a new file, whatever the old timestamps were."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


@pytest.fixture(scope="module")
def builtin() -> list[PriceBook]:
    return load_builtin_pricebooks()


def test_builtin_first_then_files_in_order(tmp_path: Path, builtin: list[PriceBook]) -> None:
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    first.write_text(house_price("1") + "discounts: [{percent: 50}]\n")
    second.write_text(house_price("3"))
    source = PriceSource([first, second], builtin=builtin)
    assert cost(source) == Decimal("1.5")
    assert cost(source, "gpt-4o") == Decimal("1.25")  # the built-in price, with the file's discount
    house = source.table.price("openai", "house-llm", ONE_MILLION_IN)
    assert house is not None and house.source == f"file:{second}"


def test_default_builtin_table_is_loaded(tmp_path: Path) -> None:
    source = PriceSource([])
    price = source.table.price("openai", "gpt-4o", ONE_MILLION_IN)
    assert price is not None and price.cost_usd == Decimal("2.5")


def test_invalid_file_at_start_is_an_error(tmp_path: Path, builtin: list[PriceBook]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(house_price("-1"))
    with pytest.raises(
        ValueError, match=r"bad.yaml: models\[0\]\.perMillionTokens\.input: must not be negative"
    ):
        PriceSource([bad], builtin=builtin)


def test_reload_keeps_the_last_good_table(
    tmp_path: Path, builtin: list[PriceBook], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(house_price("1"))
    source = PriceSource([path], builtin=builtin)
    assert source.reload_if_changed() is False
    assert cost(source) == Decimal("1")

    rewrite(path, house_price("2"))
    assert source.reload_if_changed() is True
    assert cost(source) == Decimal("2")

    caplog.set_level(logging.ERROR, logger="spendmeter_proxy.watching")
    rewrite(path, house_price("-2"))
    assert source.reload_if_changed() is False
    assert cost(source) == Decimal("2")
    assert "keeping the last good prices" in caplog.text and "must not be negative" in caplog.text
    caplog.clear()
    assert source.reload_if_changed() is False
    assert caplog.text == ""  # reported once per change, not on every check

    rewrite(path, house_price("4"))
    assert source.reload_if_changed() is True
    assert cost(source) == Decimal("4")


def test_a_file_that_disappears_keeps_the_last_good_table(
    tmp_path: Path, builtin: list[PriceBook], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(house_price("1"))
    source = PriceSource([path], builtin=builtin)
    caplog.set_level(logging.ERROR, logger="spendmeter_proxy.watching")
    path.unlink()
    assert source.reload_if_changed() is False
    assert cost(source) == Decimal("1")
    assert "disappeared" in caplog.text and str(path) in caplog.text
    path.write_text(house_price("5"))
    assert source.reload_if_changed() is True
    assert cost(source) == Decimal("5")


def test_same_size_same_mtime_replacement_is_seen(tmp_path: Path, builtin: list[PriceBook]) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(house_price("1"))
    source = PriceSource([path], builtin=builtin)
    stat = path.stat()
    replacement = tmp_path / "new.yaml"
    replacement.write_text(house_price("7"))
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, path)  # same size and mtime, new inode
    assert source.reload_if_changed() is True
    assert cost(source) == Decimal("7")


def test_kubernetes_configmap_symlink_swap(tmp_path: Path, builtin: list[PriceBook]) -> None:
    mount = tmp_path / "mount"
    mount.mkdir()
    for version, rate in (("..2024_01_01_00_00_00.1", "1"), ("..2024_01_02_00_00_00.2", "3")):
        (mount / version).mkdir()
        (mount / version / "prices.yaml").write_text(house_price(rate))
        # Same size and timestamps in both versions: only the symlink target tells them apart.
        os.utime(mount / version / "prices.yaml", ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))
    (mount / "..data").symlink_to("..2024_01_01_00_00_00.1")
    (mount / "prices.yaml").symlink_to("..data/prices.yaml")
    source = PriceSource([mount / "prices.yaml"], builtin=builtin)
    assert cost(source) == Decimal("1")

    (mount / "..data_tmp").symlink_to("..2024_01_02_00_00_00.2")
    os.replace(mount / "..data_tmp", mount / "..data")
    assert source.reload_if_changed() is True
    assert cost(source) == Decimal("3")


def test_watch_task_picks_up_changes(tmp_path: Path, builtin: list[PriceBook]) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(house_price("1"))
    source = PriceSource([path], builtin=builtin)

    async def scenario() -> Decimal | None:
        task = asyncio.create_task(source.watch(0.01))
        rewrite(path, house_price("6"))
        for _ in range(500):
            await asyncio.sleep(0.01)
            if cost(source) == Decimal("6"):
                break
        task.cancel()
        return cost(source)

    assert asyncio.run(scenario()) == Decimal("6")


def test_watch_thread_picks_up_changes(tmp_path: Path, builtin: list[PriceBook]) -> None:
    path = tmp_path / "prices.yaml"
    path.write_text(house_price("1"))
    source = PriceSource([path], builtin=builtin)
    stop = source.watch_in_thread(0.01)
    try:
        rewrite(path, house_price("8"))
        deadline = time.monotonic() + 5
        while cost(source) != Decimal("8") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert cost(source) == Decimal("8")
    finally:
        stop.set()


def test_a_file_that_appears_after_start_is_picked_up(
    tmp_path: Path, builtin: list[PriceBook], caplog: pytest.LogCaptureFixture
) -> None:
    # A pod's sidecar may start before the operator's ConfigMap is mounted.
    path = tmp_path / "prices.yaml"
    caplog.set_level(logging.WARNING)
    source = PriceSource([path], builtin=builtin)
    assert "does not exist yet" in caplog.text
    assert cost(source) is None
    path.write_text(house_price("1"))
    assert source.reload_if_changed() is True
    assert cost(source) == Decimal("1")
