"""`sitestack catalog`: the static site, driven in a real headless Chromium (Playwright).

Debian's chromium (`apt-get install chromium`) with Playwright from PyPI; Playwright's own
browser download is never used. Screenshots go to tmp_path (and to
$SITESTACK_TEST_SCREENSHOTS when set, to look at them).
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.cli import run_cli
from tests.helpers.env import clean_env
from tests.helpers.findsite import DEPRECATION, EVIL, FindSite, find_site
from tests.helpers.stacks import make_builder

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def fs(workdir: Path, wheelhouse: Path) -> FindSite:
    return find_site(workdir, wheelhouse)


@pytest.fixture(scope="module")
def site_dir(fs: FindSite, workdir: Path) -> Path:
    out = workdir / "catalog out"
    r = run_cli("--root", str(fs.root.path), "catalog", "--out", str(out), "--json", env=clean_env())
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["versions"] == 4 and info["out"] == str(out)
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = ctx.new_page()
    pg.requests_seen = []  # type: ignore[attr-defined]
    pg.on("request", lambda req: pg.requests_seen.append(req.url))  # type: ignore[attr-defined]
    pg.on("dialog", lambda d: (_ for _ in ()).throw(AssertionError(f"a dialog opened: {d.message}")))
    yield pg
    ctx.close()


def url(path: Path) -> str:
    return path.resolve().as_uri()


def screenshot(pg: Any, tmp_path: Path, name: str) -> Path:
    shot = tmp_path / name
    pg.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
    keep = os.environ.get("SITESTACK_TEST_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(shot, Path(keep) / name)
    return shot


def visible_refs(pg: Any) -> list[str]:
    return [str(x) for x in pg.eval_on_selector_all(
        "#stacks tbody tr", "rows => rows.filter(r => r.offsetParent !== null).map(r => r.querySelector('a.ref').textContent)")]


# --- the files ------------------------------------------------------------------------------

def test_catalog_json_from_records(site_dir: Path, fs: FindSite) -> None:
    data = json.loads((site_dir / "catalog.json").read_text())
    by = {v["ref"]: v for v in data["stacks"]}
    assert list(by) == ["conda/2023-01-01", "conda/2024-01-01", "conda/2025-01-01", "tools/1.0"]
    new, old, hidden = by["conda/2025-01-01"], by["conda/2024-01-01"], by["conda/2023-01-01"]
    assert new["default"] and not new["hidden"] and new["deprecated"] is None
    assert old["deprecated"] == DEPRECATION and not old["default"]
    assert hidden["hidden"] and by["tools/1.0"]["default"]
    assert new["packages"]["numpy"] == "2.4.6" and new["requirements"] == ["numpy", "shadowme", "tinyapp"]
    assert "pip" in new["packages"] and "pip" not in new["requirements"]
    assert new["smoke"]["total"] == new["smoke"]["passed"] >= 1
    assert new["previous"] == "2024-01-01" and new["diff_page"] == "conda/2025-01-01.diff.html"
    assert old["description"] == EVIL
    assert new["bytes"] > 0 and new["python"].startswith("3.")
    assert (site_dir / "conda" / "2025-01-01.diff.html").is_file()
    assert not (site_dir / "conda" / "2023-01-01.diff.html").exists()  # the first version
    # Self-contained: nothing refers to a network address.
    for f in site_dir.rglob("*"):
        if f.suffix in (".html", ".css"):
            text = f.read_text()
            assert "http://" not in text and "https://" not in text and "//cdn" not in text, f


def test_refuses_a_folder_that_is_not_a_catalog(fs: FindSite, tmp_path: Path) -> None:
    out = tmp_path / "www"
    out.mkdir()
    (out / "precious.html").write_text("keep me")
    r = run_cli("--root", str(fs.root.path), "catalog", "--out", str(out), env=clean_env())
    assert r.returncode == 2 and "is not a sitestack catalog; refusing to replace it" in r.stderr
    assert "Traceback" not in r.stderr
    assert [p.name for p in out.iterdir()] == ["precious.html"]
    r = run_cli("--root", str(fs.root.path), "catalog", "--out", str(fs.root.stacks), env=clean_env())
    assert r.returncode == 2 and "would replace part of the site root" in r.stderr
    r = run_cli("--root", str(fs.root.path), "catalog", env=clean_env())
    assert r.returncode == 2 and "give --out DIR" in r.stderr and "sitestack config catalog DIR" in r.stderr


# --- in the browser --------------------------------------------------------------------------

def test_search_filters_rows_as_you_type(page: Any, site_dir: Path, tmp_path: Path) -> None:
    page.goto(url(site_dir / "index.html"))
    all_refs = ["conda/2023-01-01", "conda/2024-01-01", "conda/2025-01-01", "tools/1.0"]
    assert visible_refs(page) == all_refs
    page.locator("#q").press_sequentially("numpy")  # key by key: the filter runs on input
    assert visible_refs(page) == all_refs[:3]
    assert page.locator("#shown").text_content() == "3 of 4 stack versions"
    matches = page.eval_on_selector_all("#stacks tbody tr:not([hidden]) td.match", "c => c.map(x => x.textContent)")
    assert matches == ["numpy 2.3.5", "numpy 2.3.5", "numpy 2.4.6"]
    screenshot(page, tmp_path, "catalog-search-numpy.png")
    page.locator("#q").press_sequentially(" 2.4")
    assert visible_refs(page) == ["conda/2025-01-01"]
    page.fill("#q", "OnlyOld")  # case-insensitive
    assert visible_refs(page) == ["conda/2023-01-01"]
    page.fill("#q", "nosuchpackage")
    assert visible_refs(page) == [] and page.locator("#none").is_visible()
    page.fill("#q", "")
    assert visible_refs(page) == all_refs and not page.locator("#none").is_visible()
    assert all(u.startswith("file://") for u in page.requests_seen), page.requests_seen


def test_version_page_and_diff_page(page: Any, site_dir: Path, fs: FindSite, tmp_path: Path) -> None:
    page.goto(url(site_dir / "index.html"))
    page.get_by_role("link", name="conda/2025-01-01", exact=True).click()
    page.wait_for_url("**/conda/2025-01-01.html")
    rows = page.eval_on_selector_all(
        "table.packages tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
    assert ["numpy", "2.4.6", "spec"] in rows and ["pip", rows[[r[0] for r in rows].index("pip")][1], ""] in rows
    assert page.locator("pre.spec").text_content().count('"numpy==2.4.6"') == 1
    cmds = page.locator("pre.cmd").all_text_contents()
    assert "module load conda/2025-01-01" in cmds[0]
    assert "load conda/2025-01-01" in cmds[1] and "'" + str(fs.root.path) + "'" in cmds[1]  # quoted for a shell
    screenshot(page, tmp_path, "catalog-version.png")
    page.get_by_role("link", name="from conda/2024-01-01", exact=True).click()
    page.wait_for_url("**/conda/2025-01-01.diff.html")
    diff = page.eval_on_selector_all(
        "table.diff tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.textContent.trim()))")
    assert ["numpy", "changed", "2.3.5", "2.4.6"] in diff and ["shadowme", "changed", "1.0", "2.0"] in diff
    assert not any(r[0] == "tinyapp" for r in diff)
    page.get_by_role("link", name="Python stacks at findsite", exact=True).click()
    page.wait_for_url("**/index.html")


def test_no_script_from_a_spec_runs(page: Any, site_dir: Path, tmp_path: Path) -> None:
    for path in (site_dir / "index.html", site_dir / "conda" / "2024-01-01.html"):
        page.goto(url(path))
        page.wait_for_load_state("load")
        assert page.evaluate("typeof window.pwned") == "undefined"
        assert page.locator("img").count() == 0  # the <img onerror> is text, not an element
        assert EVIL.strip() in page.locator("body").inner_text()
        assert DEPRECATION in page.locator("body").inner_text()
    assert page.locator(".badge.deprecated").first.is_visible()
    screenshot(page, tmp_path, "catalog-deprecated.png")
    page.goto(url(site_dir / "index.html"))
    page.fill("#q", "<img src=x onerror=window.pwned=3>")
    assert page.evaluate("typeof window.pwned") == "undefined"
    screenshot(page, tmp_path, "catalog-index.png")


# --- every change rewrites the configured catalog --------------------------------------------

def test_config_catalog_rewritten_by_build_and_state(workdir: Path, wheelhouse: Path, tmp_path: Path,
                                                    page: Any) -> None:
    from sitestack.core.layout import SiteRoot

    root = SiteRoot(workdir / "catalog-config-site")
    root.path.mkdir()
    build = make_builder(root, wheelhouse)
    build("conda", "2024-01-01", ["tinyapp"])
    out = tmp_path / "published"
    env = clean_env()

    def cli(*a: str) -> str:
        r = run_cli("--root", str(root.path), *a, env=env)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def catalog() -> dict[str, Any]:
        return {v["ref"]: v for v in json.loads((out / "catalog.json").read_text())["stacks"]}

    assert "catalog = (not set)" in cli("config")
    cli("config", "catalog", str(out))  # stored, and written at once
    assert json.loads(cli("config", "--json")) == {"catalog": str(out), "stage_mount_helper": None,
                                                   "conda_envs_dir": None}
    assert list(catalog()) == ["conda/2024-01-01"]
    build("conda", "2025-01-01", ["tinyapp", "shadowme==2.0"])
    assert list(catalog()) == ["conda/2024-01-01", "conda/2025-01-01"]
    cli("default", "conda/2025-01-01")
    assert catalog()["conda/2025-01-01"]["default"]
    cli("deprecate", "conda/2024-01-01", "-m", "old")
    assert catalog()["conda/2024-01-01"]["deprecated"] == "old"
    cli("hide", "conda/2024-01-01")
    assert catalog()["conda/2024-01-01"]["hidden"]
    # Retire: the version leaves the table and is listed as retired, with date and message.
    message = "use conda/2025-01-01 <b>now</b>"
    cli("retire", "conda/2024-01-01", "-m", message)
    assert list(catalog()) == ["conda/2025-01-01"]
    retired = json.loads((out / "catalog.json").read_text())["retired"]
    assert [(r["ref"], r["message"]) for r in retired] == [("conda/2024-01-01", message)]
    assert retired[0]["retired"] == datetime.date.today().isoformat()
    page.goto(url(out / "index.html"))
    section = page.locator("#retired")
    assert section.is_visible()
    text = section.inner_text()
    assert "conda/2024-01-01" in text and message in text  # shown as text, not markup
    assert page.locator("#retired b").count() == 0
    assert visible_refs(page) == ["conda/2025-01-01"]
    screenshot(page, tmp_path, "catalog-retired.png")
    leftovers = [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.tmp")]
    assert leftovers == []  # every rewrite swapped its temp folder in and removed the old one
    r = run_cli("--root", str(root.path), "config", "nosuchkey", "x", env=env)
    assert r.returncode == 2 and "unknown setting 'nosuchkey'" in r.stderr
    cli("config", "catalog", "--unset")
    cli("hide", "conda/2025-01-01")
    assert not catalog()["conda/2025-01-01"]["hidden"], "an unset catalog is no longer rewritten"


def test_skipped_gpu_tests_are_not_failures(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from sitestack.site import catalog

    (tmp_path / "tests.json").write_text(json.dumps([
        {"test": "import numpy", "ok": True, "status": "passed", "kind": "cpu"},
        {"test": "import torch.cuda", "ok": None, "status": "skipped", "kind": "gpu"},
        {"test": "old record", "ok": True},  # before `status` existed
    ]))
    smoke = catalog._smoke(SimpleNamespace(records=tmp_path))  # type: ignore[arg-type]
    assert (smoke["passed"], smoke["failed"], smoke["skipped"]) == (2, 0, 1)
    badge = catalog._smoke_badge({"smoke": smoke})
    assert "2/2 passed" in badge and "1 skipped" in badge and "fail" not in badge
