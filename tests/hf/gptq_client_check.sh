#!/bin/bash
# The GPTQ real-client check on the GPU machine (docs/hf-quantized.md, Checks):
# installs gptqmodel + optimum and their missing dependencies from carried
# wheels, then runs check_transformers.py's GPTQ rows via gpu_check.sh.
#
#   WHEELS=DIR tests/hf/gptq_client_check.sh      (run from the repository root)
#
# DIR holds common/ (accelerate, device_smi, pillow, psutil, pypcre,
# threadpoolctl wheels, and libpcre2-8.so.0 for pypcre) and client/
# (gptqmodel, optimum, tokenicer, logbar, defuser and the rich/markdown-it/
# mdurl/pygments wheels logbar needs). PyPI has no gptqmodel wheel: build it
# from its sdist on a machine with network, pure Python, as
#   BUILD_CUDA_EXT=0 python3.12 -m pip wheel --no-deps gptqmodel==7.5.0
# (its torch and Triton kernels only; likewise the sdist-only defuser,
# tokenicer, logbar, device-smi and pypcre), and `pip download` the rest.
# Versions that work with transformers 5.17 / torch 2.11: gptqmodel 7.5.0,
# optimum 2.3.0 (5.6.12 and 7.0.0 do not import).
set -u
WHEELS=${WHEELS:-.gptqwhl}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
SITE=/tmp/qpack-gptq-client
client=$WHEELS/client
[ -d "$client" ] || client=$WHEELS/g75  # the folder's name when it was first carried
python3 tests/hf/install_client_wheels.py --target "$SITE" --always gptqmodel --always optimum \
  --always tokenicer --always logbar --always defuser "$WHEELS/common" "$client" \
  $([ -d .whl ] && echo .whl) || exit 3  # .whl: gpu_check's carried gguf/compressed-tensors
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH} LD_LIBRARY_PATH=$SITE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
python3 -c "import gptqmodel, optimum.gptq, transformers, torch; print('gptqmodel', gptqmodel.__version__, 'transformers', transformers.__version__, 'torch', torch.__version__)" || exit 3
QPACK_HF_ONLY=${QPACK_HF_ONLY:-gptq-w4-sym-g128,gptq-w8-sym-g32,gptq-w4-sym-channel} tools/gpu_check.sh --hf-only
