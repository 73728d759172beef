"""Stage 2, transport: the local Apache Kafka launcher (``broker``) and the server side of the
client security settings (``security``)."""
