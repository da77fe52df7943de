"""Parse a JSON inventory, total it per category and print a sorted report."""
import json

INVENTORY = """
[{"item": "bolt", "category": "hardware", "qty": 120, "price": 0.05},
 {"item": "nut", "category": "hardware", "qty": 300, "price": 0.02},
 {"item": "glue", "category": "supplies", "qty": 8, "price": 3.5},
 {"item": "tape", "category": "supplies", "qty": 14, "price": 2.25}]
"""

rows = json.loads(INVENTORY)
totals = {}
for row in rows:
    value = round(row["qty"] * row["price"], 2)
    totals[row["category"]] = round(totals.get(row["category"], 0) + value, 2)

for category, value in sorted(totals.items(), key=lambda kv: kv[1], reverse=True):
    print(f"{category:<10} {value:>8.2f}")
