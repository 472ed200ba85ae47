# Mycelium MQTT node for Pycom boards (WiPy, LoPy, SiPy, FiPy, GPy) running Pycom MicroPython.
#
# It speaks the pyaiot MQTT protocol that the Mycelium MQTT gateway understands:
#   - publishes node/check {"id": NODE_ID} at start, every CHECK_INTERVAL_S and whenever the gateway publishes
#     gateway/check;
#   - answers gateway/<id>/discover: "resources" -> the list of resource names on node/<id>/resources,
#     anything else -> every value, each on node/<id>/<resource> as {"value": ...};
#   - on gateway/<id>/led/set turns the RGB LED red (payload "1") or off ("0") and reports the new led value.
#
# Needs umqtt.simple from micropython-lib in /flash/lib (see README.md). Edit the settings below, then copy
# this file to /flash/main.py.

# ---- settings ------------------------------------------------------------------------------------------------
WIFI_SSID = "my-network"
WIFI_PASSWORD = "my-wifi-password"
WIFI_EXTERNAL_ANTENNA = False
WIFI_TIMEOUT_MS = 20000

BROKER_HOST = "192.168.1.10"    # the machine running `mycelium mqtt-gateway` (embedded broker) or mosquitto
BROKER_PORT = 1883
NODE_ID = "wipy-1"              # no '+', '#' or '/'; at most 64 characters
MQTT_USERNAME = NODE_ID         # the embedded broker wants username = node id ...
MQTT_PASSWORD = ""              # ... and password = a node token: mycelium token --role node --sub wipy-1
                                # (leave empty for a gateway started with --allow-anonymous-nodes)
KEEPALIVE_S = 60
CHECK_INTERVAL_S = 30           # less than KEEPALIVE_S: the node/check publishes keep the connection alive
RECONNECT_DELAY_S = 5

NODE_NAME = "WiPy & MQTT"
NODE_BOARD = "WiPy"
POSITION = {"lat": 48.7144507, "lng": 2.2058228}   # None to leave the resource out
LED_COLOR = 0x7F0000
# ---------------------------------------------------------------------------------------------------------------

import time

import machine
import network
import pycom

try:
    import ujson as json
except ImportError:
    import json

try:
    from umqtt.simple import MQTTClient, MQTTException
except ImportError:
    from umqtt import MQTTClient, MQTTException  # a flat lib/umqtt.py

T_DISCOVER = "gateway/%s/discover" % NODE_ID
T_LED_SET = "gateway/%s/led/set" % NODE_ID
T_GATEWAY_CHECK = "gateway/check"
T_NODE_CHECK = "node/check"

state = {"led": "0"}


def check_node_id(node_id):
    if not node_id or len(node_id) > 64:
        raise ValueError("NODE_ID must have 1 to 64 characters")
    for c in "+#/":
        if c in node_id:
            raise ValueError("NODE_ID must not contain + # or /")


def resources():
    values = {
        "name": NODE_NAME,
        "os": "micropython",
        "board": NODE_BOARD,
        "led": state["led"],
    }
    if POSITION is not None:
        values["position"] = json.dumps(POSITION)
    return values


def set_led(on):
    pycom.rgbled(LED_COLOR if on else 0x000000)
    state["led"] = "1" if on else "0"


def join_wifi():
    wlan = network.WLAN(mode=network.WLAN.STA)
    if WIFI_EXTERNAL_ANTENNA:
        wlan.antenna(network.WLAN.EXT_ANT)
    if wlan.isconnected():
        return wlan
    print("joining Wi-Fi", WIFI_SSID)
    wlan.connect(WIFI_SSID, auth=(network.WLAN.WPA2, WIFI_PASSWORD), timeout=WIFI_TIMEOUT_MS)
    start = time.ticks_ms()
    while not wlan.isconnected():
        if time.ticks_diff(time.ticks_ms(), start) > WIFI_TIMEOUT_MS:
            raise OSError("Wi-Fi join timed out")
        machine.idle()
    print("Wi-Fi up:", wlan.ifconfig()[0])
    return wlan


class Node:
    def __init__(self):
        self.client = None
        self.last_check = 0

    def publish(self, topic, payload):
        self.client.publish(topic, payload, qos=1)

    def publish_value(self, name, value):
        self.publish("node/%s/%s" % (NODE_ID, name), json.dumps({"value": value}))

    def publish_check(self):
        self.publish(T_NODE_CHECK, json.dumps({"id": NODE_ID}))
        self.last_check = time.time()

    def on_message(self, topic, msg):
        topic = topic.decode()
        if topic == T_GATEWAY_CHECK:
            self.publish_check()
        elif topic == T_DISCOVER:
            if msg == b"resources":
                self.publish("node/%s/resources" % NODE_ID, json.dumps(list(resources().keys())))
            else:
                for name, value in resources().items():
                    self.publish_value(name, value)
        elif topic == T_LED_SET:
            try:
                on = int(msg.decode().strip()) != 0
            except ValueError:
                print("ignored led value", msg)
                return
            set_led(on)
            self.publish_value("led", state["led"])

    def connect(self):
        # The client id is the node id: the embedded broker refuses a node using any other node's id.
        client = MQTTClient(NODE_ID, BROKER_HOST, port=BROKER_PORT, user=MQTT_USERNAME or None,
                            password=MQTT_PASSWORD or None, keepalive=KEEPALIVE_S)
        client.set_callback(self.on_message)
        client.connect(clean_session=True)
        self.client = client
        for topic in (T_DISCOVER, T_LED_SET, T_GATEWAY_CHECK):
            client.subscribe(topic, qos=1)
        self.publish_check()
        print("MQTT connected to %s:%d as %s" % (BROKER_HOST, BROKER_PORT, NODE_ID))

    def close(self):
        if self.client is not None:
            try:
                self.client.disconnect()
            except OSError:
                pass
        self.client = None

    def run_once(self):
        self.client.check_msg()
        if time.time() - self.last_check >= CHECK_INTERVAL_S:
            self.publish_check()


def main():
    check_node_id(NODE_ID)
    pycom.heartbeat(False)
    set_led(False)
    node = Node()
    while True:
        try:
            join_wifi()
            node.connect()
            while True:
                node.run_once()
                time.sleep_ms(50)
        except (OSError, MQTTException) as err:
            # Wi-Fi lost, broker gone, or CONNACK refused (MQTTException 4: bad token, 5: not authorised,
            # 2: client id refused): start again after a pause.
            print("connection lost:", err)
            node.close()
            time.sleep(RECONNECT_DELAY_S)


main()
