"""Model code of the model stages: loading, embeddings, perplexity, classifiers, generation, clustering.

Every module here imports torch, transformers and faiss lazily (inside functions), so importing
`curation.models.*` is cheap and works without the `models`/`gpu` extras; calling a function that
needs them raises MissingDependencyError naming the extra to install.
"""
