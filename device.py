"""Which accelerator this process can run on: the one answer that embedding, serving and fine-tuning share."""

__all__ = ["gpu_available"]


def gpu_available():
    """Whether Paddle was built with CUDA and sees at least one GPU."""
    import paddle

    if not paddle.is_compiled_with_cuda():
        return False
    try:
        return paddle.device.cuda.device_count() > 0
    except Exception:  # noqa: BLE001 -- a CUDA build on a machine without a driver.
        return False
