import json

from chalicelib import events, handlers
from devtools import event_routing


def test_committed_event_routing_is_current():
    assert event_routing.DOCUMENT.read_text() == event_routing.render(), "run: python -m devtools.event_routing"


def test_event_routing_names_every_queue_the_app_consumes_once():
    routing = json.loads(event_routing.DOCUMENT.read_text())
    named = [*routing["topic_queues"], *routing["other_queues"]]
    assert sorted(named) == sorted(event_routing.consumed_queues())
    assert len(set(named)) == len(named)


def test_a_topic_queue_receives_exactly_the_types_its_handlers_take_and_none_means_every_type():
    routing = json.loads(event_routing.DOCUMENT.read_text())
    for queue, types in routing["topic_queues"].items():
        expected = sorted(handlers.TOPIC_QUEUES[queue])
        assert (types or sorted(events.KNOWN_TYPES)) == expected, queue
        assert set(types or ()) <= set(events.KNOWN_TYPES), queue
