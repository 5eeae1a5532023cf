"""Local HTTP emulators of the services breakglass talks to (Entra, Graph, ServiceNow, Freshservice, Halo,
Bot Connector, Bot Framework channel auth, OpenAI-compatible chat), for tests and the local dev stack.

Typical use in a test::

    graph = GraphEmulator(min_active_seconds=0)
    graph.seed(demo_seed()["graph"])
    with graph.start() as running:          # own thread + event loop
        ...  # product talks to running.url
        graph.clock.advance(1800)           # schedule instances expire by themselves
        assert graph.calls.count(path="/roleAssignmentScheduleRequests", method="POST") == 1
"""

from .automation import AutomationEmulator
from .base import Emulator, StateError
from .botauth import BotAuthEmulator, ChannelTokenMinter, TokenVariant
from .botconnector import BotConnectorEmulator
from .calls import CallLog, CallRecord
from .clock import Clock
from .entra import EntraEmulator
from .faults import FaultInjector, FaultRule
from .freshservice import FreshserviceEmulator
from .graph import GraphEmulator
from .halo import HaloEmulator
from .openai import OpenAIEmulator
from .pim import RoleSettings, instance_id
from .runner import RunningEmulator, start_in_thread
from .seed import demo_seed
from .servicenow import ServiceNowEmulator
from .stack import StackConfig, ThreadedStack, build_emulators
from .tls import ClientCertificate, LocalCA, make_client_certificate, write_combined_bundle
from .tokens import mint_access_token

__all__ = [
    "AutomationEmulator",
    "BotAuthEmulator",
    "BotConnectorEmulator",
    "CallLog",
    "CallRecord",
    "ChannelTokenMinter",
    "ClientCertificate",
    "Clock",
    "Emulator",
    "EntraEmulator",
    "FaultInjector",
    "FaultRule",
    "FreshserviceEmulator",
    "GraphEmulator",
    "HaloEmulator",
    "LocalCA",
    "OpenAIEmulator",
    "RoleSettings",
    "RunningEmulator",
    "ServiceNowEmulator",
    "StackConfig",
    "StateError",
    "ThreadedStack",
    "TokenVariant",
    "build_emulators",
    "demo_seed",
    "instance_id",
    "make_client_certificate",
    "mint_access_token",
    "start_in_thread",
    "write_combined_bundle",
]
