"""Test vectors as JSON data; `vectors.loader` is the one way tests read them."""
