"""The LLM gateway and the layers it composes.

journal, budget, circuit, retry, classify, pricing, tokens, endpoint, embedded.
"""
