"""Data adapters: the pipeline JSONL checked and converted to Axolotl's multimodal chat format.

Usage:
    from data_adapters.pipeline import read_pipeline, to_axolotl_row
"""
