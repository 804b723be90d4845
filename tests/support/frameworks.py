"""Small framework YAMLs more than one test file runs."""

# Three phases of one agent each, each step quoting the previous answer: budgets and
# resume tests stop it between phases.
CHAIN = """
name: chain
phases:
  - name: one
    agents:
      - {name: first, role: You answer briefly., prompt: "Step one of {{task}}", max_tokens: 200}
  - name: two
    agents:
      - {name: second, role: You answer briefly., prompt: "Step two: {{first}}", max_tokens: 200}
  - name: three
    agents:
      - {name: third, role: You answer briefly., prompt: "Step three: {{second}}", max_tokens: 200}
"""
