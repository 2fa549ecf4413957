"""The two things tandem personalizes over: users and items."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="A person who interacts with items; user_id as in the event schema.",
    owner="tandem",
    tags={"domain": "personalization"},
)

item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="Something that can be recommended; item_id as in the event schema.",
    owner="tandem",
    tags={"domain": "personalization"},
)
