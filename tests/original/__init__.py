"""TensorFlowOnSpark 2.2.5's own unit tests (see NOTICE); a package so its conftest does not shadow tests/conftest."""
