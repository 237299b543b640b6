# pixels-sql — the two commands of the README are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup jar browser dicom-tools viewer demo test lint format clean bench bench-thumbnails bench-meta bench-server \
	bench-ingest bench-dicomweb bench-dicomweb-attacks bench-object-storage bench-scale bench-zip-scale bench-typed-header bench-cli bench-deid bench-dimse fuzz stress-writers stress-dimse dbt \
	generate check-generated

# pip also builds the compiled header reader (setup.py): a change to its C source reinstalls.
$(STAMP): pyproject.toml setup.py pixels_sql/dicom/_fastmeta.c scripts/check-java scripts/check-cc
	scripts/check-java
	PYTHON=$(PYTHON) scripts/check-cc
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

# The tests and the demo run a build of jvm/ as it is: scripts/build-jar rebuilds the jar (a few
# seconds) unless the sources, pyspark's jars and the JDK are those of its last build.
jar: setup
	PYTHON=$(PY) scripts/build-jar

demo: jar
	$(VENV)/bin/pixels-sql demo

# The dbt/ project (dbt build: models and tests) over the sample files of `make demo`, through a
# `pixels-sql serve` on pixels-home (started and stopped here unless one runs). dbt has a venv of
# its own: dbt's dependencies must not disturb $(VENV). See dbt/README.md.
DBT_STAMP := .venv-dbt/.installed

$(DBT_STAMP): dbt/requirements.txt
	PYTHON=$(PYTHON) scripts/dbt-build --install

dbt: jar $(DBT_STAMP)
	scripts/dbt-build

# Files with parts generated from the attribute registry (pixels_sql/dicom/attributes: the
# catalog's columns in sql/ and docs/, dbt's native attributes, the QIDO-RS keys of docs/), then
# dbt's macros generated from sql/ (pixels_sql/dbt_sql): rewrite them after changing either;
# tests/test_attributes.py and tests/test_dbt_sql.py fail while one differs.
generate: setup
	$(PY) -m pixels_sql.dicom.attributes --write
	$(PY) -m pixels_sql.dbt_sql --write

check-generated: setup
	$(PY) -m pixels_sql.dicom.attributes --check
	$(PY) -m pixels_sql.dbt_sql --check

lint: setup
	$(PY) -m ruff check pixels_sql tests bench
	$(PY) -m ruff format --check pixels_sql tests bench

# The gallery test drives a real headless Chromium.
browser:
	scripts/check-chromium

# Debian's DCMTK and dicom3tools, which tests hold dicom_meta and de-identification to.
dicom-tools:
	scripts/check-dicom-tools

# The OHIF viewer that pixels-sql serve shows at / (the pinned @ohif/app build from npm).
viewer: setup
	scripts/install-viewer

# What the tests keep between runs, outside the checkout: the JVM class archive of
# tests/conftest.py (rewritten when the JDK, pyspark or the jar changes).
TEST_CACHE ?= $(HOME)/.cache/pixels-sql-tests

# Two workers, each running whole modules (servers start once per module): the two cores stay
# busy while one worker's commands wait on their JVMs.
test: jar lint browser dicom-tools viewer
	PIXELS_SQL_TEST_CACHE=$(TEST_CACHE) $(PY) -m pytest -n 2 --dist loadfile

# Speed targets live in bench/ (see bench/README.md), never in the tests.
bench: bench-meta bench-thumbnails bench-server bench-ingest bench-dicomweb bench-dicomweb-attacks \
	bench-object-storage bench-scale bench-zip-scale bench-typed-header bench-cli bench-deid bench-dimse

bench-thumbnails: jar
	$(PY) -m bench.thumbnails --files 96

bench-meta: jar
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.meta --sizes 1000,10000 --mr 20000 --pipeline 10000 --pipeline 100000 \
	  --listing 10000 --listing 100000 --big-file --profile

# The typed header table (sql/50_header.sql) filled vs the JSON path (sql/20_meta.sql), same run,
# 20,000 real-template MR headers.
bench-typed-header: jar
	$(PY) -m bench.typed_header --files 20000 --warmup 3 --runs 7

# The pixels-sql command through the home's warm engine vs embedded (issue 28's targets).
bench-cli: jar
	$(PY) -m bench.cli --files 785 --new 11 --queries 20

# De-identification in Spark vs dicognito and pydicom's deid, single-process (issue 29).
bench-deid: jar
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.deid --files 10000

# pixels-sql serve through a real JDBC client (PyHive) vs the embedded session, one after the other.
bench-server: jar
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m bench.server --files 10000 --runs 200

# Zip members read in place vs extracted, and the no-op re-run of ingest over 100k files.
bench-ingest: jar
	$(PY) -m bench.ingest --zips 100 --members 5 --files 100000

# A synthetic archive of 100,000 and 1,000,000 files (~17.5 GB, made once in bench/data/),
# ingested end to end with `pixels-sql ingest --no-thumbnails`: time, files/s, peak memory.
bench-scale: jar
	$(PY) -m bench.scale --files 100000 --files 1000000

# One zip archive of 100,000 small DICOM files (~11 MiB, made once in bench/data/): the cost of a
# member read with the central directory parsed once against parsed per read, then
# `pixels-sql ingest` of it end to end (the issue's target: under 60 s).
bench-zip-scale: jar
	$(PY) -m bench.zip_scale --members 100000

# Bytes transferred reading the metadata of 1,000 objects of >= 5 MB from an S3 server on loopback.
bench-object-storage: jar
	$(PY) -m bench.object_storage --objects 1000 --baseline 100

# QIDO-RS searches over 10,000 studies / 100,000 instances and WADO-RS frames, over HTTP.
# Beside Orthanc + its DICOMweb plugin (issue 31): both servers also hold the same 2,000
# studies (20,002 files: loading all 100,001 into Orthanc takes long; these load in under a
# minute), catalogued by pixels-sql into a database of its own in the same run.
bench-dicomweb: jar
	scripts/check-dicom-tools
	$(PY) -m bench.dicomweb --studies 10000 --instances-per-study 10 --runs 200 --orthanc-studies 2000

# The attacks of issue 26 on the DICOMweb server: frame amplification, a 1 GiB POST, 20,000
# half-open connections, 8 large renders - each against a baseline of the same run.
bench-dicomweb-attacks: jar
	$(PY) -m bench.dicomweb_attacks --studies 1000 --connections 20000 --renders 8

# The hostile-input run of tests/test_hardening.py with 5,000 seeded mutants (CI runs 80).
fuzz: jar
	PIXELS_SQL_FUZZ_MUTANTS=5000 $(PY) -m pytest tests/test_hardening.py -k "not kill"

# Issue 26's acceptance run of tests/test_writers.py: 10 rounds of a CLI ingest through a server
# while STOW-RS stores arrive (CI runs 3).
stress-writers: jar
	PIXELS_SQL_WRITER_ROUNDS=10 $(PY) -m pytest tests/test_writers.py -k stows_arrive

format: setup
	$(PY) -m ruff format pixels_sql tests bench
	$(PY) -m ruff check --fix pixels_sql tests bench

clean:
	rm -rf build pixels-home test-artifacts

# Receiving over DICOM networking (issue 30): visibility after C-STORE/STOW-RS, and storescu
# throughput over 4 associations against Orthanc on the same files.
bench-dimse: jar dicom-tools
	$(PY) -m bench.dimse --visibility 1000 --stow 200 --throughput 10000 --associations 4

# tests/test_dimse.py's kill -9 during a store, with 2,000 instances (CI sends 300).
stress-dimse: jar dicom-tools
	PIXELS_SQL_DIMSE_KILL_INSTANCES=2000 PIXELS_SQL_TEST_CACHE=$(TEST_CACHE) $(PY) -m pytest tests/test_dimse.py -k kill
