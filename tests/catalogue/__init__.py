"""The attack and fault catalogue (docs/security-catalogue.md), one file per area; ids in test names."""
