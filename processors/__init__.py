"""Stream processors: pure logic (one package each) and the runtime that drives them."""
