"""The choices of --vram and --precision, without torch: the command line offers them before torch is
imported; nodes/runtime/memory_manager.py and devices.py act on them."""

VRAM_MODES = ("auto", "high", "normal", "low", "cpu")
PRECISIONS = ("auto", "fp16", "bf16", "fp32")
