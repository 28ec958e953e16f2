"""The HTTP layer: parsing requests, checking tokens, rendering answers."""
