"""A Pyramid + SQLAlchemy app served by waitress, one process per forkyard worker.

GET / answers which process served it, which process opened the database
connection it used (always the same one: no pool is shared across workers), and a
random number from a generator seeded per worker by forkyard's `seed_env`.
"""
import os
import random

from pyramid.config import Configurator
from pyramid.view import view_config

from models import Greeting, Session, engine

# post_fork's seed_env gives every spawn a fresh 256-bit seed.
random.seed(os.environ.get("APP_SEED"))


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
