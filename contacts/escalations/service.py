"""Accounts and escalations: work items under one account, their workflow and history,
links, merges, SLAs, follow-the-sun hand-offs, queues and the support leads' dashboard.

This module is the escalations' published interface: the pages, the API, the jobs and the
composition layer call these names; each lives in the module named for its job (items,
relations, clock, follow, queues, accounts). Other areas are reached through the desk's
neighbours (`neighbours.py`), wired by `contacts/app.py`; the vault and the outbox are the
two areas imported here.
"""

from contacts.escalations.accounts import AccountPicture, account_picture, set_profile
from contacts.escalations.answers import (
    Written,
    customer_wrote,
    item_for_update_reply,
    ticket_of_request,
)
from contacts.escalations.clock import SlaReport, check_sla, sla_state, time_left
from contacts.escalations.desk import Renderer, SupportDesk
from contacts.escalations.follow import (
    call_unreached,
    follow_requests,
    hand_off,
    incidents_of_open_items,
    recent_handoffs,
    requests_seen_since,
    resolve_with_incidents,
)
from contacts.escalations.items import (
    ItemView,
    NewItem,
    assign,
    change_status,
    comment,
    create_item,
    delete_item,
    get_item,
    item_view,
    reply,
    set_priority,
    set_region,
)
from contacts.escalations.neighbours import Neighbours, Person, TimelineEntry
from contacts.escalations.queues import (
    Dashboard,
    Queue,
    QueueFilter,
    QueueRow,
    assignable_staff,
    check_filter,
    dashboard,
    delete_view,
    items_api,
    queue,
    save_view,
    saved_views,
)
from contacts.escalations.relations import bulk, link, merge
from contacts.escalations.replies import thread_message_ids as item_message_ids

__all__ = [
    "AccountPicture", "Dashboard", "ItemView", "Neighbours", "NewItem", "Person", "Queue",
    "QueueFilter", "QueueRow", "Renderer", "SlaReport", "SupportDesk", "TimelineEntry",
    "Written", "customer_wrote", "item_for_update_reply", "ticket_of_request",
    "account_picture",
    "assign", "assignable_staff", "bulk", "call_unreached", "change_status", "check_filter",
    "check_sla", "comment", "create_item", "dashboard", "delete_item", "delete_view",
    "follow_requests", "get_item", "hand_off", "incidents_of_open_items", "item_message_ids",
    "item_view",
    "items_api", "link", "merge", "queue", "recent_handoffs", "reply", "requests_seen_since",
    "resolve_with_incidents", "save_view", "saved_views", "set_priority", "set_profile",
    "set_region", "sla_state", "time_left",
]
