#!/usr/bin/env bash
# Create the project's virtualenv with Sidegate (editable) and its test tools.
#   scripts/bootstrap-venv.sh [python] [venv-dir]
# On a fresh Debian, `python3 -m venv` needs the python3-venv package: install it when missing.
set -euo pipefail
python="${1:-python3}"
venv="${2:-.venv}"

if ! "$python" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null; then
    echo "Sidegate needs Python 3.11 or newer; '$python' is $("$python" --version 2>&1)" >&2
    exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        rm -rf "$venv"
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
            echo "installing python3-venv (needed to create $venv)"
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            "$python" -m venv "$venv"
        else
            echo "cannot create a virtualenv: install python3-venv (apt-get install python3-venv)" >&2
            exit 1
        fi
    fi
fi
# The hot path is compiled with mypyc: that needs a C compiler and the Python headers.
include=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
if ! command -v cc >/dev/null || [[ ! -f "$include/Python.h" ]]; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        echo "installing gcc and python3-dev (to compile the hot path)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc python3-dev >/dev/null
    else
        echo "compiling the hot path needs a C compiler and Python.h: apt-get install gcc python3-dev" >&2
        exit 1
    fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade setuptools
# Editable and interpreted here; the Makefile compiles the hot path in place (setup.py).
SIDEGATE_COMPILE=0 "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[dev]'
echo "virtualenv ready: $venv/bin/sidegate"
