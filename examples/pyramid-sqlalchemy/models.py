"""The database layer, set up at import time: the classic pre-fork trap.

Under a preloading server (gunicorn --preload, uWSGI without lazy-apps) this engine
and its connection pool would be created once in the master and shared by every
forked worker. Under forkyard each worker is a fresh exec, so each one builds its
own engine and pool; the `connect` listener records which process opened each
connection so the app can prove it.
"""
import os

from sqlalchemy import Column, Integer, String, create_engine, event
from sqlalchemy.orm import declarative_base, sessionmaker

DB_URL = os.environ.get("DATABASE_URL", "sqlite:////tmp/forkyard-example.db")

engine = create_engine(DB_URL, pool_size=2, max_overflow=0)
Session = sessionmaker(bind=engine)
Base = declarative_base()


@event.listens_for(engine, "connect")
def remember_opener(dbapi_connection, record):
    record.info["opened_by_pid"] = os.getpid()


class Greeting(Base):
    __tablename__ = "greetings"
    id = Column(Integer, primary_key=True)
    text = Column(String(200), nullable=False)
