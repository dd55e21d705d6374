"""gptload: a key-pool proxy for the Google Gemini API, built for serverless Google Cloud."""

__version__ = "0.1.0"
