"""Generation: the engine, the thinking pipeline and the interactive chat."""
