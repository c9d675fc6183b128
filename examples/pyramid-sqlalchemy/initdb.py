"""on_start hook: create the schema and the first row, once, before any worker."""
from models import Base, Greeting, Session, engine

Base.metadata.create_all(engine)
with Session() as session:
    if session.query(Greeting).count() == 0:
        session.add(Greeting(text="hello from a schema created by on_start"))
        session.commit()
print("schema ready at", engine.url)
