# JupyterHub for a natslab workshop on one machine: every learner logs in and gets a JupyterLab of
# their own with a copy of the course, already joined to the class (NATSLAB_CLASS points at their
# class file), so each check they run shows on the instructor's dashboard.
#
#   python -m natslab class start alice bob --dir ./class          # the class server (keep it running)
#   NATSLAB_CLASS_DIR=./class NATSLAB_HUB_PASSWORD=... \
#       .venv/bin/jupyterhub -f docker/workshop/jupyterhub_config.py
#
# Settings, all from the environment:
#   NATSLAB_CLASS_DIR      the class directory the console wrote (learners/<name>.json, instructor.json)
#   NATSLAB_HUB_PASSWORD   the workshop's shared password (the learners' names come from the class)
#   NATSLAB_HUB_PORT       the hub's port on 127.0.0.1 (default 8000)
#   NATSLAB_HUB_API_PORT   the hub's internal port, also on 127.0.0.1 (default 8081)
#   NATSLAB_HUB_PROXY_API_PORT  the proxy's control port, also on 127.0.0.1 (default 8001)
#   NATSLAB_HUB_STATE      where the hub keeps its database, cookie secret and the learners' homes
#                          (default: <class dir>/hub)
#   NATSLAB_HUB_API_TOKEN  optional: a token for the "natslab" service (instructor scripts, the tests)
#
# Who can log in: exactly the learners of the class, plus "instructor" (an admin, whose notebooks
# get NATSLAB_CLASS_INSTRUCTOR for the dashboard). Servers run as the hub's own user, each in its own
# home (SimpleLocalProcessSpawner). That spawner gives no isolation between learners at the level of
# the operating system: a learner with a terminal could read another's files, class file included.
# NATS keeps its boundaries (each class file only opens its own account), but whoever holds a file is
# that learner. Use it for a room you trust or a demo; otherwise give each learner a system account
# (c.JupyterHub.spawner_class = "localprocess", class files copied to their homes, mode 0600) or run
# Zero to JupyterHub on Kubernetes (docker/workshop/README.md).
import os
import shutil
import sys
from pathlib import Path

c = get_config()  # noqa: F821  (JupyterHub provides it)

COURSE = Path(__file__).resolve().parents[2]
CLASS_DIR = Path(os.environ.get("NATSLAB_CLASS_DIR", "")).expanduser().resolve()
if not (CLASS_DIR / "instructor.json").exists():
    sys.exit("natslab: set NATSLAB_CLASS_DIR to the directory `python -m natslab class start --dir DIR` wrote "
             f"(no instructor.json in {CLASS_DIR}).")
PASSWORD = os.environ.get("NATSLAB_HUB_PASSWORD")
if not PASSWORD:
    sys.exit("natslab: set NATSLAB_HUB_PASSWORD to the password you will tell the room.")
STATE = Path(os.environ.get("NATSLAB_HUB_STATE") or CLASS_DIR / "hub").expanduser().resolve()
(STATE / "homes").mkdir(parents=True, exist_ok=True)
BIN = Path(sys.executable).parent            # the course's venv: jupyterhub-singleuser, natslab, nats-server


def learners() -> set[str]:
    return {p.stem for p in (CLASS_DIR / "learners").glob("*.json")}


# -- the hub and its proxy, on this machine only ------------------------------------------------
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = int(os.environ.get("NATSLAB_HUB_PORT", "8000"))
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("NATSLAB_HUB_API_PORT", "8081"))
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.ConfigurableHTTPProxy.command = [str(COURSE / "docker/workshop/node_modules/.bin/configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{os.environ.get('NATSLAB_HUB_PROXY_API_PORT', '8001')}"
c.JupyterHub.cleanup_servers = True         # the learners' servers stop with the hub
c.JupyterHub.cleanup_proxy = True

# -- who may log in ------------------------------------------------------------------------------
c.JupyterHub.authenticator_class = "shared-password"     # one password for the room
c.SharedPasswordAuthenticator.user_password = PASSWORD
c.Authenticator.allowed_users = learners() | {"instructor"}
c.Authenticator.admin_users = {"instructor"}
# a learner added while the hub runs: restart the hub, or add them as an admin (Admin page / API)

# -- each learner's JupyterLab ---------------------------------------------------------------------
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = str(STATE / "homes" / "{username}")
c.Spawner.cmd = [str(BIN / "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab/tree/notebooks/00_welcome.ipynb"
if os.getuid() == 0:                         # containers and CI machines run as root
    c.Spawner.args = ["--allow-root"]
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120


def copy_course(spawner):
    """A learner's own copy of the lessons and labs, made at their first start and kept after."""
    home = Path(spawner.home_dir_template.format(username=spawner.user.name))
    home.mkdir(parents=True, exist_ok=True)
    for folder in ("notebooks", "labs"):
        if not (home / folder).exists():
            shutil.copytree(COURSE / folder, home / folder)
    for name in ("COURSE.ipynb",):
        if not (home / name).exists() and (COURSE / name).exists():
            shutil.copy2(COURSE / name, home / name)


c.Spawner.pre_spawn_hook = copy_course


def class_file(spawner):
    name = spawner.user.name
    return "" if name == "instructor" else str(CLASS_DIR / "learners" / f"{name}.json")


def home_of(spawner):
    return str(STATE / "homes" / spawner.user.name)


c.Spawner.environment = {
    "NATSLAB_CLASS": class_file,                                           # joined from the first check
    "NATSLAB_CLASS_INSTRUCTOR": lambda spawner: str(CLASS_DIR / "instructor.json")
    if spawner.user.name == "instructor" else "",
    "NATSLAB_PROGRESS": lambda spawner: f"{home_of(spawner)}/.natslab/progress.json",
    "NATSLAB_BACKEND": os.environ.get("NATSLAB_BACKEND", "local"),
    "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
}

# -- an API token for instructor scripts (and the course's own test) ------------------------------
token = os.environ.get("NATSLAB_HUB_API_TOKEN")
if token:
    c.JupyterHub.services = [{"name": "natslab", "api_token": token}]
    c.JupyterHub.load_roles = [{"name": "natslab-instructor", "services": ["natslab"],
                                "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"]}]
