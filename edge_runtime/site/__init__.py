"""The devices of the watched network: who a flow belongs to, services, episodes and incidents, each device's living normal, the operator's word and the state kept across restarts."""
