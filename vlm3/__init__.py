"""vlm3: fine-tune, serve and evaluate Qwen2-VL on your own documents.

Usage:
    vlm3 --help    # the CLI (vlm3.cli.main); recipes, runs, training steps and the tiny model live here
"""
