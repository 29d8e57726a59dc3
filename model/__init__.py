"""mymodel: predict before departure whether a flight from New York arrives late."""
