# The block as Studio runs it: `edge-impulse-blocks push` has Edge Impulse build this file.
# Build:  docker build -t ast-audio-labeler .
# Build args:
#   TORCH_INDEX_URL  where pip finds torch; the default PyTorch CPU index keeps the image free of
#                    the multi-GB CUDA build. For a GPU image use https://download.pytorch.org/whl/cu128
#                    (or empty for PyPI's default build).
#   BAKE_MODEL       1 (default): download MODEL's weights into the image at build time, so a Studio
#                    job never waits on the hub or hits its rate limits. 0: mount a model at run time.
#   MODEL            the hub id to bake in.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BAKE_MODEL=1
ARG MODEL=MIT/ast-finetuned-audioset-10-10-0.4593
# Lets a build use a local wheel folder (CI and air-gapped builds); unset elsewhere.
ARG PIP_FIND_LINKS

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/opt/hf-cache

RUN useradd --create-home --uid 1000 block
WORKDIR /app

# Dependencies first: a code change rebuilds only the last layers.
COPY requirements.txt .
RUN python3 -m pip install ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -r requirements.txt

# Weights next: they change only when MODEL does.
RUN mkdir -p "$HF_HOME" && if [ "$BAKE_MODEL" = "1" ]; then \
        python3 -c "import sys; from transformers import AutoFeatureExtractor as F, AutoModelForAudioClassification as M; F.from_pretrained(sys.argv[1]); M.from_pretrained(sys.argv[1])" "$MODEL"; \
    fi && chmod -R a+rX "$HF_HOME"

COPY transform.py parameters.json ./
COPY labeler ./labeler
# The baked model's --dtype int8 conversion (ONNX export + dynamic quantization, tens of seconds),
# stored beside the weights, so a job with --dtype int8 never converts.
RUN if [ "$BAKE_MODEL" = "1" ]; then \
        HF_HUB_OFFLINE=1 python3 -m labeler.classifiers.int8 "$MODEL" && chmod -R a+rX "$HF_HOME"; \
    fi

USER block
ENV HF_HUB_OFFLINE=1
ENTRYPOINT ["python3", "-u", "transform.py"]
