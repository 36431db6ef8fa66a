"""Count the reliability cases that ran, by category, at the end of the run."""
from collections import Counter

_passed = Counter()
# tests without a "category: what the user did" id count under their module's category
MODULE_CATEGORY = {"killed_runs": "killed", "untrusted_files": "untrusted", "full_disk": "disk"}


def _category(item_id: str) -> str:
    if "[" in item_id and ":" in item_id.split("[", 1)[1]:
        return item_id.split("[", 1)[1].split(":", 1)[0]  # "test_user_mistake[data: train ...]" -> "data"
    module = item_id.split("::")[0].rsplit("/", 1)[-1].removeprefix("test_").removesuffix(".py")
    return MODULE_CATEGORY.get(module, module)


def pytest_runtest_logreport(report):
    if report.when == "call" and report.passed and "reliability" in report.nodeid:
        _passed[_category(report.nodeid)] += 1


def pytest_terminal_summary(terminalreporter):
    if _passed:
        summary = ", ".join(f"{name} {count}" for name, count in sorted(_passed.items()))
        terminalreporter.write_line(f"reliability cases survived: {sum(_passed.values())} ({summary})")
