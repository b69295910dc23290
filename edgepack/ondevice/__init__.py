"""What runs on the device: the agent that measures a bundle, and the loader apps use.

Standard library, numpy and the device's runtime only; never anything else of edgepack. The
modules import each other relatively, so that `edgepack.agent.assemble` can join them into the one
file pushed to devices (`edgepack_agent.py`, from cli.py) and the one copied into every bundle
(`edgepack_runtime.py`, from loader.py).
"""
