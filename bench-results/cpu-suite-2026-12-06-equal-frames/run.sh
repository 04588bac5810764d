#!/bin/bash
cd /tmp/suite2/kit
export PYTHONPATH=/tmp/suite2/kit
date > /tmp/suite2/times.txt
/work/main/.venv/bin/python -m kit bench --accuracy --suite --no-course --cache /work/main/data --out /tmp/suite2/out > /tmp/suite2/suite.log 2>&1
date >> /tmp/suite2/times.txt
