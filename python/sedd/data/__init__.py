"""Data: the built-in language with its exact likelihood (`language`), tokenizers and corpora —
local text, Hugging Face `datasets` by name, token files cached once (`corpora`).

Imports: `sedd.core` only."""

from .corpora import Corpus, get_tokenizer, load_corpus, text_files
from .language import Language, LanguageOracle, builtin_language

__all__ = ["Corpus", "get_tokenizer", "load_corpus", "text_files", "Language", "LanguageOracle",
           "builtin_language"]
