#!/usr/bin/env python3
"""Counts Catch2 test cases in meson testlog.json files.

Usage: count_test_cases.py [--details] TESTLOG.json...

Prints "PASSED FAILED" on stdout; with --details also one line per test
executable on stderr.
Each meson test is one Catch2 executable; its counts come from the summary
Catch2 prints last:
  All tests passed (12 assertions in 3 test cases)
  test cases: 4 | 3 passed | 1 failed
An executable that failed without Catch2 reporting a failed test case
(crash, timeout, sanitizer error, leak found at exit, no summary at all)
adds one failed test case, so it can never be counted as green.
"""
import json
import re
import sys

ALL_PASSED = re.compile(r"^All tests passed \(\d+ assertions? in (\d+) test cases?\)", re.M)
# Catch2 pads the numbers and leaves out zero columns, e.g.
# "test cases:  5 |  4 passed | 1 failed" or "test cases: 1 | 1 failed".
SUMMARY = re.compile(r"^test cases:\s*(\d+)((?:\s*\|\s*\d+ [a-z ]+?)*)\s*$", re.M)
COLUMN = re.compile(r"\|\s*(\d+) ([a-z ]+?)\s*(?=\||$)")
OK_RESULTS = {"OK", "EXPECTEDFAIL", "SKIP"}


def count_one(entry):
    """(passed, failed, note) for one meson test entry."""
    output = (entry.get("stdout") or "") + "\n" + (entry.get("stderr") or "")
    result = entry.get("result", "")
    passed = failed = 0
    found = False
    match = None
    for match in ALL_PASSED.finditer(output):
        pass
    if match:
        passed, failed, found = int(match.group(1)), 0, True
    else:
        for match in SUMMARY.finditer(output):
            pass
        if match:
            columns = {label: int(n) for n, label in COLUMN.findall(match.group(2))}
            # "failed as expected" ([!shouldfail]) is a success.
            failed = columns.get("failed", 0)
            passed = int(match.group(1)) - failed
            found = True
    note = ""
    if result not in OK_RESULTS and failed == 0:
        failed += 1
        note = f" (+1 failed: {result}, exit code {entry.get('returncode')}" + (
            ")" if found else ", no Catch2 summary)")
    return passed, failed, note


def main(paths, details):
    total_passed = total_failed = 0
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as log:
            for line in log:
                if not line.strip():
                    continue
                entry = json.loads(line)
                passed, failed, note = count_one(entry)
                total_passed += passed
                total_failed += failed
                if details:
                    print(f"  {path}: {entry.get('name')} -> {passed} test cases ok, "
                          f"{failed} not ok{note}", file=sys.stderr)
    print(total_passed, total_failed)


if __name__ == "__main__":
    args = sys.argv[1:]
    show_details = "--details" in args
    args = [a for a in args if a != "--details"]
    if not args:
        sys.exit(__doc__)
    main(args, show_details)
