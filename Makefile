.PHONY: setup demo test bench lint
setup:
	./scripts/setup.sh
demo:
	./scripts/demo.sh
test:
	./scripts/test.sh
bench: setup
	.venv/bin/python -m bench.run_all
lint: setup
	.venv/bin/ruff check pipeline secure_runtime workflows tests bench examples
