"""A Pyramid + SQLAlchemy app served by waitress, under forkyard.

Two ways to run it: one fresh process per worker (config.yaml), or imported once
by forkyard's preloader and forked into each worker (preload.yaml).

GET / answers which process served it, which process opened the database
connection it used, and a random number from a generator seeded per worker by
forkyard's `seed_env`. Run fresh, each worker opens its own connection. Preloaded,
the connection opened below at import is inherited by every worker unless
post_fork disposes of the engine's pool (preload.yaml does).
"""
import os
import random

from pyramid.config import Configurator
from pyramid.view import view_config

from models import Greeting, Session, engine


def reseed():
    """post_fork's seed_env gives every spawn a fresh 256-bit seed in APP_SEED;
    preloaded, this runs in each worker as a post_fork `call:`."""
    random.seed(os.environ.get("APP_SEED"))


reseed()

# Read once at import, as many apps warm a cache: this opens a database connection
# in whichever process imports the app, and leaves it in the engine's pool.
with Session() as _session:
    _first = _session.query(Greeting).first()
    DEFAULT_GREETING = _first.text if _first else None


@view_config(route_name="home", renderer="json")
def home(request):
    with Session() as session:
        greeting = session.query(Greeting).first()
        raw = session.connection().connection
        opened_by = raw._connection_record.info.get("opened_by_pid")
    return {
        "pid": os.getpid(),
        "worker": os.environ.get("FORKYARD_WORKER"),
        "connection_opened_by_pid": opened_by,
        "pool": repr(engine.pool.status()),
        "greeting": greeting.text if greeting else None,
        "random": random.random(),
    }


def main(global_config=None, **settings):
    with Configurator(settings=settings) as config:
        config.add_route("home", "/")
        config.scan(__name__)
        return config.make_wsgi_app()


application = main()
