"""Data: reading corpora and task files, the built-in corpus, tokenizers and example builders.

`readers` turns `data.train_files`-style specs into files and files into documents (lists of
sentences or lines); `builtin` builds the offline default corpus from the Python standard library.
"""
