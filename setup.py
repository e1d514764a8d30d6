"""Installs the repository root as the Python package ``bert_cased_L_24_H_1024_A_16``.

Every version pin of the project lives here, each with its reason.
"""

import setuptools

PACKAGE = "bert_cased_L_24_H_1024_A_16"
SUBPACKAGES = ["weights", "finetune", "tasks", "corpus", "kernels"]
RAY = "ray[data]==2.60.0"

setuptools.setup(
    name="bert-cased-L-24-H-1024-A-16",
    version="1.1.0",
    description="BERT-Large, cased (24-layer, 1024-hidden, 16-heads, 340M parameters) as a PaddleHub module "
                "on PaddlePaddle 3",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    package_dir={PACKAGE: ".", **{f"{PACKAGE}.{sub}": sub for sub in SUBPACKAGES}},
    packages=[PACKAGE] + [f"{PACKAGE}.{sub}" for sub in SUBPACKAGES],
    package_data={PACKAGE: ["assets/vocab.txt", "assets/bert_config.json", "assets/calibration.txt"],
                  f"{PACKAGE}.kernels": ["linear_op.cc", "linear_int8_op.cc", "adamw_op.cc", "layer_norm_op.cc",
                                         "dropout_op.cc", "attention_op.cc", "onednn.h", "threads.h",
                                         "dropout_mask.h"]},  # Compiled on first use.
    install_requires=[
        # The static graph (PIR), the inference passes and the 1.x tensor format this package relies on
        # were measured on exactly this release (see ../shared/STACK.md). GPU users install
        # paddlepaddle-gpu==3.3.1 first and this package with --no-deps.
        "paddlepaddle==3.3.1",
        "numpy",
        "safetensors",  # Hugging Face checkpoints without pickle.
        "sentencepiece",  # The SentencePiece tokenizer.
        "tqdm",  # Progress bars for long embedding, download and conversion jobs.
        "pyarrow",  # The embed command reads Parquet inputs and writes its output as Parquet shards.
    ],
    extras_require={
        "hub": [
            "paddlehub==2.4.0",
            # paddlehub 2.4.0 does not import on paddlepaddle 3.3.1 with newer releases of these four
            # (each was measured to break `import paddlehub`).
            "huggingface_hub<0.26",
            "aistudio-sdk==0.2.6",
            "datasets<3",
            "protobuf==3.20.3",
            # A paddlehub dependency; pinning it only saves the resolver minutes of backtracking.
            "gradio==5.14.0",
            # Imported by tasks/ (the 2.x task models' tokenizer and chunk metric). Pinned to the release
            # measured with paddlehub 2.4.0 here, whose token-cls quirks (padded seq_len, 1-element chunk
            # counts) tasks/models.py works around.
            "paddlenlp==2.8.1",
        ],
        # `embed --ray`: Ray Data's actor pools. Measured on exactly this release (see ../shared/STACK.md), and a
        # driver must run the same Ray version as the cluster it joins.
        "ray": [RAY],
        "test": [
            "pytest",
            RAY,  # One test runs embed --ray on a local cluster.
            # The independent references for the network and the tokenizer. torch is pinned to the CPU
            # wheel: an unpinned torch pulls a multi-GB CUDA build.
            "torch==2.13.0",
            "transformers<4.47",
            "tokenizers",
            # The benchmark's quick test runs ONNX Runtime (export, BERT fusion, int8 quantization, which
            # imports onnx and ml_dtypes); releases after 1.26.0 need protobuf>=4.25.8, the hub extra 3.20.3.
            "onnxruntime==1.26.0",
            "onnx",
            "ml_dtypes",
        ],
    },
    entry_points={"console_scripts": [f"bert-cased-large={PACKAGE}.cli:main"]},
)
