"""`e5rt bench`: the shipped benchmark runner (bench extra). Nothing in the runtime imports it; the CLI loads
it only when the bench command runs."""
