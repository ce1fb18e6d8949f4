# Thin aliases of bootstrap.py, for those who have make.
.PHONY: quickstart test shell
quickstart:
	python3 bootstrap.py quickstart
test:
	python3 bootstrap.py test
shell:
	python3 bootstrap.py shell
