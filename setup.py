from setuptools import find_packages, setup

setup(
    name="flop-fairseq",
    version="0.2.0",
    description="FLOP (Factorized Low-rank Pruning) for fairseq language models",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["flop_fairseq", "flop_fairseq.*"]),
    # the fairseq-hydra-train configs (`flop-user-dir --recipes`): data, not a package
    package_data={"flop_fairseq": ["recipes/*.yaml"]},
    python_requires=">=3.9",
    # fairseq itself is installed with --no-deps (its metadata pins torchaudio,
    # which would replace torch): see scripts/setup_env.sh and the README.
    install_requires=["torch>=2.1", "numpy", "sacremoses"],
    entry_points={
        "console_scripts": [
            "flop-convert = flop_fairseq.cli.convert:main",
            "flop-report = flop_fairseq.cli.report:main",
            "flop-compact = flop_fairseq.cli.compact:main",
            "flop-truncate = flop_fairseq.cli.truncate:main",
            "flop-user-dir = flop_fairseq.cli.user_dir:main",
            "flop-demo = flop_fairseq.demo.pipeline:main",
        ]
    },
)
