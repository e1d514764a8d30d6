"""device.py: reading /proc/cpuinfo, and choosing MKL's fast code path on AMD CPUs only."""

import os
import subprocess
import sys

import pytest

from bert_cased_L_24_H_1024_A_16.device import MKL_CPU_TYPE_ENV, cpuinfo_field, select_fast_mkl_path

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R45
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
"""


def test_cpuinfo_field_reads_the_first_line_of_a_field(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text(CPUINFO)
    assert cpuinfo_field("vendor_id", str(path)) == "AuthenticAMD"
    assert cpuinfo_field("flags", str(path)).split() == ["fpu", "avx2", "avx512f", "avx512_bf16"]
    assert cpuinfo_field("microcode", str(path)) is None
    assert cpuinfo_field("flags", str(tmp_path / "missing")) is None


def test_fast_mkl_path_is_chosen_on_amd_only_and_never_over_the_users_choice():
    environ = {}
    assert select_fast_mkl_path(environ, vendor="AuthenticAMD") and environ == {MKL_CPU_TYPE_ENV: "5"}
    for vendor in ("GenuineIntel", ""):
        environ = {}
        assert not select_fast_mkl_path(environ, vendor=vendor) and environ == {}
    environ = {MKL_CPU_TYPE_ENV: "4"}
    assert not select_fast_mkl_path(environ, vendor="AuthenticAMD") and environ == {MKL_CPU_TYPE_ENV: "4"}


@pytest.mark.skipif(cpuinfo_field("vendor_id") is None, reason="needs /proc/cpuinfo")
def test_importing_the_package_sets_it_before_paddle_runs():
    env = {k: v for k, v in os.environ.items() if k != MKL_CPU_TYPE_ENV}
    code = "import os, bert_cased_L_24_H_1024_A_16; print(os.environ.get('MKL_DEBUG_CPU_TYPE'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == ("5" if cpuinfo_field("vendor_id") == "AuthenticAMD" else "None")
