#!/usr/bin/env python3
"""A real Kafka client (confluent-kafka, i.e. librdkafka) for chunkbus's
black-box tests in tests/it/kafka.rs. The venv it runs in is made by
`make test-deps`.

  client.py produce BOOTSTRAP TOPIC [--acks all|1|0]   values = stdin lines
  client.py consume BOOTSTRAP TOPIC --count N [--group G] [--commit]
                                               [--timeout S]
  client.py group2 BOOTSTRAP TOPIC --group G --count N [--bootstrap2 B]
  client.py admin BOOTSTRAP TOPIC
  client.py groups BOOTSTRAP TOPIC --group G --stored S

`produce --idempotent` enables librdkafka's idempotent producer
(`enable.idempotence=true`, which needs acks=all). `admin` runs the
AdminClient calls of tests/it/kafka_admin.rs against TOPIC and prints one
JSON object of their outcomes.

`produce` prints one JSON object: {"delivered": [[partition, offset], ...],
"errors": [...]} and exits 1 if any delivery failed. `consume` prints one
JSON object per record ({"p", "o", "v"}) and exits 0 once it has N records,
1 on timeout or error. Without --group it assigns every partition from the
beginning; with --group it subscribes (consumer group protocol) and, with
--commit, commits each record's offset synchronously.
"""

import argparse
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import AdminClient, ConfigResource, NewPartitions, NewTopic


def produce(args):
    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": args.acks,
        "linger.ms": 5,
        "message.timeout.ms": int(args.timeout * 1000),
        "enable.idempotence": args.idempotent,
    })
    delivered, errors = [], []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append([msg.partition(), msg.offset()])

    for line in sys.stdin.read().splitlines():
        producer.produce(args.topic, line.encode(), on_delivery=on_delivery)
        producer.poll(0)
    left = producer.flush(args.timeout)
    if left:
        errors.append(f"{left} messages not delivered within {args.timeout}s")
    print(json.dumps({"delivered": delivered, "errors": errors}), flush=True)
    return 1 if errors else 0


def consume(args):
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group or "chunkbus-test-unused",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 500,
    }
    consumer = Consumer(conf)
    if args.group:
        consumer.subscribe([args.topic])
    else:
        meta = consumer.list_topics(args.topic, timeout=10)
        parts = meta.topics[args.topic].partitions
        consumer.assign([TopicPartition(args.topic, p, OFFSET_BEGINNING) for p in parts])
    got = 0
    deadline = time.monotonic() + args.timeout
    try:
        while got < args.count:
            if time.monotonic() > deadline:
                print(json.dumps({"error": f"timeout after {got} records"}), flush=True)
                return 1
            msg = consumer.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                print(json.dumps({"error": str(msg.error())}), flush=True)
                return 1
            value = msg.value().decode() if msg.value() is not None else None
            print(json.dumps({"p": msg.partition(), "o": msg.offset(), "v": value}), flush=True)
            got += 1
            if args.commit:
                consumer.commit(message=msg, asynchronous=False)
    finally:
        consumer.close()
    return 0


def group2(args):
    """Two members of one group in this process (each with its own
    connections). The member holding partitions reads and commits half of
    the N records, then leaves; the other must be assigned them and go on
    from the last commit. Prints {"first": [...], "second": [...],
    "assignments": [...]}: values read by each, and every assignment seen."""
    conf = {
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 300,
    }
    assignments = []
    members = {}
    # With --bootstrap2, nothing is read until both members hold disjoint
    # partitions of one generation (proof that both reached the same
    # coordinator): assigned partitions stay paused until then.
    gate = {"open": not args.bootstrap2}
    latest = {}
    for name in ("a", "b"):
        own = dict(conf, **{"client.id": name})
        if name == "b" and args.bootstrap2:
            own["bootstrap.servers"] = args.bootstrap2
        c = Consumer(own)

        def on_assign(consumer, parts, name=name):
            assignments.append([name, sorted(p.partition for p in parts)])
            latest[name] = {p.partition for p in parts}
            if not gate["open"]:
                consumer.assign(parts)
                consumer.pause(parts)

        c.subscribe([args.topic], on_assign=on_assign)
        members[name] = c
    deadline = time.monotonic() + args.timeout
    while not gate["open"]:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "members never shared the partitions", "assignments": assignments}))
            return 1
        for c in members.values():
            c.poll(0.1)
        a, b = latest.get("a", set()), latest.get("b", set())
        if a and b and not (a & b):
            gate["open"] = True
            for c in members.values():
                c.resume(c.assignment())
    read = {"a": [], "b": []}

    def step(name):
        msg = members[name].poll(0.1)
        if msg is None or msg.error():
            return None
        read[name].append(msg.value().decode())
        members[name].commit(message=msg, asynchronous=False)
        return msg

    half = args.count // 2
    first = None
    # Both poll until one of them has read half of the records.
    while first is None:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "timeout in the first half", "read": read, "assignments": assignments}))
            return 1
        for name in ("a", "b"):
            if first is None and name in members:
                step(name)
                if len(read[name]) >= half:
                    first = name
    second = "b" if first == "a" else "a"
    # Let the other member see the first assignment round settle.
    members[first].close()
    del members[first]
    while len(read[first]) + len(read[second]) < args.count:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "timeout after the leave", "read": read, "assignments": assignments}))
            return 1
        step(second)
    members[second].close()
    print(json.dumps({"first": read[first], "second": read[second], "assignments": assignments}), flush=True)
    return 0


def admin(args):
    """Creates TOPIC (twice), asks for wrong shapes and names, describes
    TOPIC's and the broker's configs, lists topics, tries a delete and a
    partition increase. Each outcome is an error name or "ok"."""
    a = AdminClient({"bootstrap.servers": args.bootstrap})

    def outcome(future):
        try:
            future.result(timeout=args.timeout)
            return "ok"
        except KafkaException as e:
            return e.args[0].name()

    out = {}
    fs = a.create_topics([NewTopic(args.topic, -1)], request_timeout=args.timeout)
    out["create"] = outcome(fs[args.topic])
    fs = a.create_topics([NewTopic(args.topic, -1)], request_timeout=args.timeout)
    out["create_again"] = outcome(fs[args.topic])
    fs = a.create_topics([NewTopic(args.topic + "-five", 5, 1)], request_timeout=args.timeout)
    out["create_five_partitions"] = outcome(fs[args.topic + "-five"])
    fs = a.create_topics([NewTopic("bad.name", -1)], request_timeout=args.timeout)
    out["create_bad_name"] = outcome(fs["bad.name"])
    fs = a.create_topics(
        [NewTopic(args.topic + "-compact", -1, config={"cleanup.policy": "compact"})],
        request_timeout=args.timeout)
    out["create_compacted"] = outcome(fs[args.topic + "-compact"])
    res = ConfigResource(ConfigResource.Type.TOPIC, args.topic)
    configs = a.describe_configs([res], request_timeout=args.timeout)[res].result(timeout=args.timeout)
    out["topic_configs"] = {k: [v.value, v.is_read_only] for k, v in configs.items()}
    broker = ConfigResource(ConfigResource.Type.BROKER, "0")
    configs = a.describe_configs([broker], request_timeout=args.timeout)[broker].result(timeout=args.timeout)
    out["broker_configs"] = {k: v.value for k, v in configs.items()}
    meta = a.list_topics(timeout=args.timeout)
    out["topics"] = {name: len(t.partitions) for name, t in meta.topics.items()}
    out["delete"] = outcome(a.delete_topics([args.topic], request_timeout=args.timeout)[args.topic])
    fs = a.create_partitions([NewPartitions(args.topic, 4)], request_timeout=args.timeout)
    out["create_partitions"] = outcome(fs[args.topic])
    print(json.dumps(out), flush=True)
    return 0


def groups(args):
    """A consumer (client.id member-a) joins group G on TOPIC; then the
    AdminClient lists the consumer groups and describes G (live), G after
    the member committed one record and closed, S (a group with stored
    positions only) and a group nobody uses. Prints one JSON object."""
    a = AdminClient({"bootstrap.servers": args.bootstrap})
    c = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": args.group,
        "client.id": "member-a",
        "partition.assignment.strategy": "range",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    assigned = []
    c.subscribe([args.topic], on_assign=lambda _c, parts: assigned.extend(parts))
    deadline = time.monotonic() + args.timeout
    while not assigned:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "never assigned"}))
            return 1
        c.poll(0.1)

    def describe(group):
        d = a.describe_consumer_groups([group], request_timeout=args.timeout)[group].result(timeout=args.timeout)
        return {
            "state": d.state.name,
            "simple": d.is_simple_consumer_group,
            "assignor": d.partition_assignor,
            "members": [
                [m.client_id, m.host, sorted(tp.partition for tp in m.assignment.topic_partitions)]
                for m in d.members
            ],
        }

    out = {}
    listed = a.list_consumer_groups(request_timeout=args.timeout).result(timeout=args.timeout)
    out["listed"] = {g.group_id: [g.state.name, g.is_simple_consumer_group] for g in listed.valid}
    out["list_errors"] = [str(e) for e in listed.errors]
    out["live"] = describe(args.group)
    # One record read and committed: the group keeps a position after
    # its member leaves.
    while True:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "nothing to read", **out}))
            return 1
        msg = c.poll(0.1)
        if msg is not None and not msg.error():
            c.commit(message=msg, asynchronous=False)
            break
    c.close()
    out["after_leave"] = describe(args.group)
    out["stored"] = describe(args.stored)
    out["nobody"] = describe("nobody-uses-this")
    print(json.dumps(out), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("produce")
    p.add_argument("bootstrap")
    p.add_argument("topic")
    p.add_argument("--acks", default="all")
    p.add_argument("--timeout", type=float, default=20.0)
    p.add_argument("--idempotent", action="store_true")
    c = sub.add_parser("consume")
    c.add_argument("bootstrap")
    c.add_argument("topic")
    c.add_argument("--count", type=int, required=True)
    c.add_argument("--group")
    c.add_argument("--commit", action="store_true")
    c.add_argument("--timeout", type=float, default=20.0)
    g = sub.add_parser("group2")
    g.add_argument("bootstrap")
    g.add_argument("topic")
    g.add_argument("--group", required=True)
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--bootstrap2", help="member b bootstraps from here")
    g.add_argument("--timeout", type=float, default=60.0)
    a = sub.add_parser("admin")
    a.add_argument("bootstrap")
    a.add_argument("topic")
    a.add_argument("--timeout", type=float, default=10.0)
    gr = sub.add_parser("groups")
    gr.add_argument("bootstrap")
    gr.add_argument("topic")
    gr.add_argument("--group", required=True)
    gr.add_argument("--stored", required=True)
    gr.add_argument("--timeout", type=float, default=20.0)
    args = ap.parse_args()
    return {"produce": produce, "consume": consume, "group2": group2, "admin": admin,
            "groups": groups}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
