"""On-premises RAG knowledge-base appliance."""

__version__ = "0.1.0"
