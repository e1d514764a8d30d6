"""device.py: reading /proc/cpuinfo, MKL's fast code path on AMD CPUs only, math threads and serial CPU execution."""

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


def test_math_threads_follow_omp_num_threads_above_one_else_share_the_cpus_we_may_use(monkeypatch):
    from bert_cased_L_24_H_1024_A_16.device import available_cpus, math_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert math_threads() == 3
    monkeypatch.setenv("PADDLE_LOCAL_SIZE", "2")
    assert math_threads() == 3  # a choice is kept whatever the launcher started
    for unset in ("1", "", "many"):  # Paddle writes "1" at import when nothing higher was chosen
        monkeypatch.setenv("OMP_NUM_THREADS", unset)
        monkeypatch.delenv("PADDLE_LOCAL_SIZE")
        assert math_threads() == available_cpus() == len(os.sched_getaffinity(0))
        monkeypatch.setenv("PADDLE_LOCAL_SIZE", str(2 * available_cpus()))  # more processes than CPUs
        assert math_threads() == 1


def test_cpu_execution_sets_paddles_flags_inside_and_restores_them():
    import paddle

    from bert_cased_L_24_H_1024_A_16.device import cpu_execution

    inside = {"FLAGS_new_executor_serial_run": True, "FLAGS_use_stride_kernel": False}
    before = paddle.get_flags(list(inside))
    with cpu_execution():
        assert paddle.get_flags(list(inside)) == inside
    assert paddle.get_flags(list(inside)) == before
    with pytest.raises(KeyError):
        with cpu_execution():
            raise KeyError("a failing step")
    assert paddle.get_flags(list(inside)) == before


def test_cpu_execution_runs_paddles_openmp_loops_on_one_thread():
    import ctypes
    import os

    import paddle  # noqa: F401  (loads libgomp)

    from bert_cased_L_24_H_1024_A_16.device import cpu_execution

    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
    except OSError:
        pytest.skip("this Paddle does not load libgomp")
    before = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(2)
    try:
        with cpu_execution():
            assert gomp.omp_get_max_threads() == 1
        assert gomp.omp_get_max_threads() == 2
    finally:
        gomp.omp_set_num_threads(before)
