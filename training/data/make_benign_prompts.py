"""Write ``benign_prompts.jsonl``: clearly benign texts, the negatives of the text risk head.

Original content only (no benchmark items): everyday questions about images, general chat, texts
with harmless "scary" words, and text as it appears inside images (signs, menus, numbered lists).
Templates x slot values plus hand-written items, sampled with a fixed seed so the file is
reproducible: ``python training/data/make_benign_prompts.py [--out PATH] [--seed N]``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

OBJECTS = [
    "apples", "cars", "people", "birds", "chairs", "books", "windows", "trees", "boats", "cups",
    "bicycles", "dogs", "cats", "balloons", "candles", "plates", "shoes", "flowers", "clouds",
    "cows", "sheep", "umbrellas", "buses", "pencils", "cookies", "eggs", "coins", "stars",
    "traffic lights", "bottles", "ducks", "horses", "lamps", "pillows", "oranges", "tomatoes",
]
SCENES = [
    "picture", "photo", "image", "screenshot", "drawing", "painting", "diagram", "chart",
    "scan", "poster", "map", "slide", "illustration", "snapshot", "frame",
]
ANIMALS = [
    "dog", "cat", "bird", "horse", "lizard", "fish", "butterfly", "spider", "snake", "frog",
    "rabbit", "hamster", "parrot", "owl", "beetle", "turtle", "cow", "goat", "mushroom", "tree",
    "flower", "plant", "cactus",
]
PLACES = [
    "Paris", "Tokyo", "Lisbon", "Cairo", "Lima", "Oslo", "Nairobi", "Toronto", "Seoul", "Rome",
    "Kyoto", "Prague", "Sydney", "Mexico City", "Istanbul", "Edinburgh", "Hanoi", "Cape Town",
    "Reykjavik", "Vienna", "Barcelona", "Chicago", "Mumbai", "Buenos Aires", "Amsterdam",
]
DISHES = [
    "banana bread", "sourdough bread", "lasagna", "pancakes", "fried rice", "tomato soup",
    "chocolate chip cookies", "a vegetable curry", "guacamole", "pad thai", "apple pie",
    "risotto", "hummus", "french toast", "a caesar salad", "chili", "dumplings", "paella",
    "lemon cake", "granola", "miso soup", "a fruit smoothie", "roast chicken", "falafel",
]
HOBBIES = [
    "knit a scarf", "plant tomatoes", "train for a 5k", "learn the guitar", "start a journal",
    "paint with watercolors", "build a birdhouse", "repot a houseplant", "set up an aquarium",
    "brew tea properly", "learn to juggle", "fold a paper crane", "make a budget spreadsheet",
    "organize a closet", "clean a laptop keyboard", "change a bike tire", "write a cover letter",
    "prepare for a job interview", "study for an exam", "plan a road trip", "bake bread",
    "make a paper airplane", "start composting", "learn a new language", "care for a puppy",
    "wash a car", "hang a picture frame", "set up a tent", "make a podcast", "meditate",
    "improve handwriting", "grow herbs indoors", "back up a phone", "sharpen a pencil",
    "tie a tie", "iron a shirt", "make coffee with a french press", "decorate a cake",
    "write a thank-you note", "assemble a bookshelf", "plan a birthday party",
    "save energy at home",
    "learn to swim", "paint a room", "wrap a gift", "knead pizza dough", "clean a cast iron pan",
    "plan a wedding", "learn to draw portraits", "potty train a toddler", "walk a dog on a leash",
    "make a kite", "fix a leaky faucet", "unclog a sink", "write a resume", "take better notes",
    "improve public speaking", "start a small vegetable garden", "learn chess openings",
    "teach a dog to sit", "make homemade pasta", "photograph the night sky", "calm down before "
    "a test", "keep a houseplant alive", "learn to touch type", "read more books", "make soap "
    "at home", "build a sandcastle", "restore old furniture", "prepare a picnic", "pack a "
    "suitcase", "plan a garden party", "make a scrapbook", "sew a button", "brew kombucha",
    "learn sign language", "make a budget", "reduce food waste", "recycle electronics "
    "responsibly", "stretch after running", "clean windows without streaks", "cook rice on the "
    "stove", "choose a good watermelon", "learn to ride a bike", "write a short story",
    "organize a bookshelf", "set up a home office", "improve posture", "make cold brew coffee",
    "get better sleep", "volunteer in your community", "teach kids to read", "stay hydrated",
    "prepare for a marathon", "learn to code", "speed up an old laptop", "create a strong "
    "password", "protect your privacy online", "spot a phishing email", "stay safe while hiking",
    "childproof a home", "prepare an emergency kit", "report a lost passport", "apply for a "
    "library card", "start a book club", "care for a cat", "bathe a dog", "trim a hedge",
]
TOPICS = [
    "photosynthesis", "the water cycle", "black holes", "the French Revolution", "inflation",
    "compound interest", "machine learning", "the stock market", "plate tectonics",
    "the immune system", "climate change", "the Roman Empire", "supply and demand", "DNA",
    "electric cars", "the internet", "volcanoes", "the moon landing", "vaccines", "gravity",
    "the printing press", "renewable energy", "the Great Wall of China", "blockchain",
    "the Renaissance", "ocean tides", "recycling", "the human heart", "rainbows", "jazz music",
    "the Olympic Games", "bees and pollination", "the periodic table", "solar panels",
    "the Silk Road", "earthquakes", "antibiotics", "the electoral college", "sleep cycles",
    "cybersecurity basics", "fire safety", "first aid", "road safety", "online privacy",
    "the history of medicine", "World War I", "the Cold War", "ancient Egypt", "nutrition",
    "mental health awareness", "public health", "the justice system", "criminology",
    "how locks work", "encryption", "the human brain", "chemistry lab safety", "poisonous plants",
]
LANGS = ["Spanish", "French", "German", "Japanese", "Italian", "Portuguese", "Korean", "Dutch"]
CODE_TASKS = [
    "reverse a string in Python", "read a CSV file with pandas", "sort a list of dictionaries",
    "write a unit test with pytest", "center a div in CSS", "make an HTTP request in JavaScript",
    "parse JSON in Go", "write a SQL query that joins two tables", "use git rebase",
    "create a virtual environment", "format dates in Java", "write a for loop in Rust",
    "debug a segmentation fault in C", "profile a slow Python function", "write a regex for emails",
    "set up a React project", "handle exceptions in Python", "merge two sorted arrays",
    "write a Dockerfile for a Flask app", "use async await in Python", "compute a moving average",
    "plot a histogram with matplotlib", "deploy a static website", "write a bash script that "
    "renames files", "implement binary search", "memoize a recursive function",
]

IMAGE_QUESTION_TEMPLATES = [
    "How many {obj} are in this {scene}?",
    "Count the {obj} in the {scene}.",
    "What color are the {obj} in this {scene}?",
    "Are there any {obj} in the {scene}?",
    "Where are the {obj} located in the {scene}?",
    "What is in this {scene}?",
    "Describe this {scene} in detail.",
    "Can you describe what is happening in this {scene}?",
    "Write a short caption for this {scene}.",
    "What is the main subject of this {scene}?",
    "What season does this {scene} look like it was taken in?",
    "What time of day is it in this {scene}?",
    "What is the weather like in the {scene}?",
    "What species of {animal} is shown in the {scene}?",
    "What kind of {animal} is this?",
    "Is the {animal} in this {scene} healthy-looking?",
    "What breed is the {animal} in the {scene}?",
    "Is this {scene} taken in {place}?",
    "Which landmark in {place} is shown in this {scene}?",
    "Read the text on the sign in this {scene}.",
    "What does the sign in the {scene} say?",
    "Translate the menu in this {scene} into {lang}.",
    "Translate the text in the {scene} to {lang}.",
    "What is the total amount on this receipt?",
    "What is the title of the {scene}?",
    "Summarize the information in this {scene}.",
    "What trend does this {scene} show?",
    "Which bar in the {scene} is the tallest?",
    "What is the recipe for the dish in this {scene}? It looks like {dish}.",
    "How do I make the {dish} shown in the {scene}?",
    "What font is used in this {scene}?",
    "Is there a person in this {scene}, and what are they wearing?",
    "What emotion does the person in the {scene} seem to express?",
    "What is the person in the {scene} holding?",
    "Suggest a title for this {scene}.",
    "Write a haiku inspired by this {scene}.",
    "What is funny about this {scene}?",
    "Explain the joke in this meme.",
    "What does this meme mean?",
    "What objects are on the table in this {scene}?",
    "Which of the {obj} in the {scene} is the largest?",
    "Is the {scene} in black and white or in color?",
    "What could be improved in the composition of this {scene}?",
    "What brand is the product in this {scene}?",
    "How much does the item on the price tag cost?",
    "Solve the equation shown in the {scene}.",
    "What is the answer to the math problem in the {scene}?",
    "What is written on the whiteboard in this {scene}?",
    "Is this {scene} of {place} or somewhere else?",
    "What architectural style is the building in the {scene}?",
]
GENERAL_TEMPLATES = [
    "Can you explain {topic} in simple terms?",
    "What is {topic}?",
    "Give me three interesting facts about {topic}.",
    "Write a short paragraph about {topic} for a school report.",
    "How would you explain {topic} to a ten-year-old?",
    "What are the main ideas behind {topic}?",
    "Recommend a good book about {topic}.",
    "How do I {hobby}?",
    "What are some tips to {hobby}?",
    "I want to {hobby}. Where should I start?",
    "Give me a step-by-step plan to {hobby}.",
    "What do I need to {hobby}?",
    "How long does it take to {hobby}?",
    "Share a recipe for {dish}.",
    "How do I make {dish} without an oven?",
    "What goes well with {dish}?",
    "How many calories are in a slice of {dish}?",
    "Plan a three-day trip to {place}.",
    "What are the best museums in {place}?",
    "What is the weather usually like in {place} in spring?",
    "What should I pack for a week in {place}?",
    "What food is {place} famous for?",
    "How do you say 'good morning' in {lang}?",
    "Translate 'where is the train station' into {lang}.",
    "What is the best way to learn {lang}?",
    "How do I {code}?",
    "Show me how to {code}.",
    "Why does my code fail when I try to {code}?",
    "What is the fastest way to {code}?",
]
OCR_TEMPLATES = [
    "Steps to {hobby}.\n1.\n2.\n3.",
    "How to {hobby}\n1.\n2.\n3.",
    "Methods to {hobby}.\n1.\n2.\n3.",
    "Ways to {hobby}:\n1.\n2.\n3.",
    "Tips to {hobby}\n1.\n2.\n3.",
    "{place} Central Station\nPlatform 4\nDeparture 10:45",
    "Welcome to {place}",
    "Visit {place}\nSummer Festival 2024",
    "MENU\n{dish_title} 12.50\nHouse salad 7.00\nLemonade 3.50",
    "Today's special: {dish_title}",
    "Recipe: {dish_title}\nServes 4\nPrep time 20 min",
    "Chapter 3: {topic_title}",
    "Lecture 5 - {topic_title}",
    "Introduction to {topic_title}",
    "{topic_title}\nKey points\n1.\n2.\n3.",
    "Quiz: {topic_title}\nQuestion 1",
    "Fresh {obj} - 2 for $3",
    "{obj_title} for sale",
    "Lost and found: {obj}",
    "Learn {lang} in 30 days",
    "{topic_title}\n1.\n2.\n3.",
    "Facts about {topic}\n1.\n2.\n3.",
    "Reasons to {hobby}\n1.\n2.\n3.",
    "Things you need to {hobby}:\n1.\n2.\n3.",
    "Steps to {hobby}. 1. 2. 3.",
    "Guide: how to {hobby}",
    "List of steps to {hobby}.\n1.\n2.\n3.\n4.",
    "Workshop: {topic_title}\nRoom 3B, 2 pm",
    "Safety first: {topic}",
]
IMAGE_META_TEMPLATES = [
    "The image shows a list. Please complete each numbered item.",
    "Fill in the empty numbered items shown in the image with about 100 words each.",
    "The picture contains a numbered list; write the missing content for each step.",
    "Read the heading in the image and complete the list under it.",
    "Answer the question written in the image.",
    "Follow the instructions written in this picture.",
    "Complete the outline shown in the image.",
]

HAND_WRITTEN: list[tuple[str, str]] = [
    # harmless texts with "scary-looking" words
    ("scary_words", "How do I kill a process that is not responding on Linux?"),
    ("scary_words", "How can I kill all Python processes in the task manager?"),
    ("scary_words", "What's the best way to shoot portrait photos in low light?"),
    ("scary_words", "Tips for shooting a basketball free throw."),
    ("scary_words", "What are basic knife skills every home cook should learn?"),
    ("scary_words", "How do I sharpen a kitchen knife safely?"),
    ("scary_words", "How should a school organize a fire drill?"),
    ("scary_words", "What happens during a fire drill at an office?"),
    ("scary_words", "How do I execute a Python script from the command line?"),
    ("scary_words", "How do I execute a SQL stored procedure?"),
    ("scary_words", "Which common drug interactions should I avoid when taking ibuprofen?"),
    ("scary_words", "Which foods interact badly with blood thinners?"),
    ("scary_words", "Summarize the history of the First World War."),
    ("scary_words", "What were the main causes of World War II?"),
    ("scary_words", "How do vaccines train the immune system?"),
    ("scary_words", "Explain how nuclear power plants generate electricity."),
    ("scary_words", "What chemistry experiments are safe for a high school class?"),
    ("scary_words", "Why does mixing baking soda and vinegar fizz?"),
    ("scary_words", "How do firefighters put out forest fires?"),
    ("scary_words", "How do I terminate a thread in Java cleanly?"),
    ("scary_words", "My code keeps crashing with a fatal error. How can I debug it?"),
    ("scary_words", "How do I nuke my node_modules folder and reinstall?"),
    ("scary_words", "How do I attack this chess opening as black?"),
    ("scary_words", "What is the best strategy to destroy my opponent in Monopoly?"),
    ("scary_words", "How do I blow up a balloon without a pump?"),
    ("scary_words", "How do I beat the final boss in a platform video game?"),
    ("scary_words", "How do I hack together a quick prototype for a hackathon?"),
    ("scary_words", "What are some life hacks for a tidy kitchen?"),
    ("scary_words", "How do I get rid of weeds in my garden without chemicals?"),
    ("scary_words", "How can I stop mosquitoes from biting me while camping?"),
    ("scary_words", "How do I trap a mouse humanely and release it outside?"),
    ("scary_words", "What should I do if I get stung by a bee?"),
    ("scary_words", "How do I treat a minor burn from a hot pan?"),
    ("scary_words", "What is the lethal dose concept in toxicology class, in general terms?"),
    ("scary_words", "Why is carbon monoxide dangerous and how do detectors work?"),
    ("scary_words", "How do I safely dispose of old batteries?"),
    ("scary_words", "How did medieval castles defend against sieges?"),
    ("scary_words", "Explain the plot of Macbeth."),
    ("scary_words", "Who won the Battle of Hastings?"),
    ("scary_words", "What does a forensic scientist do?"),
    ("scary_words", "How do crime novelists research police procedures?"),
    ("scary_words", "Recommend some classic murder mystery novels."),
    ("scary_words", "How do I remove a virus from my computer?"),
    ("scary_words", "How can I protect my account from phishing emails?"),
    ("scary_words", "How do I report a scam text message?"),
    ("scary_words", "What is a firewall and why do I need one?"),
    ("scary_words", "How do I set up two-factor authentication?"),
    ("scary_words", "How does a password manager keep my passwords safe?"),
    ("scary_words", "How can I tell if a website is a phishing site?"),
    ("scary_words", "What should I do if my identity is stolen?"),
    ("scary_words", "How do I dye my hair at home without damaging it?"),
    ("scary_words", "How do I cut a mango?"),
    ("scary_words", "How do I butcher a whole chicken into parts for cooking?"),
    ("scary_words", "What is the best way to carve a Thanksgiving turkey?"),
    ("scary_words", "How do I shoot a video with my phone that looks professional?"),
    ("scary_words", "How do I smash garlic with a knife?"),
    ("scary_words", "What's the safest way to light a charcoal grill?"),
    ("scary_words", "Is it safe to leave a candle burning overnight?"),
    ("scary_words", "How do I put out a small grease fire in the kitchen?"),
    ("scary_words", "How do I fire an employee respectfully?"),
    ("scary_words", "How do I bleed the air out of a radiator?"),
    ("scary_words", "What's the punchline of the joke 'why did the chicken cross the road'?"),
    ("scary_words", "How does the body fight off a cold?"),
    ("scary_words", "What are the symptoms of dehydration?"),
    ("scary_words", "How much sleep does a teenager need?"),
    ("scary_words", "What is a healthy resting heart rate?"),
    ("scary_words", "How do I start running if I'm out of shape?"),
    ("scary_words", "What is the difference between a virus and bacteria?"),
    ("scary_words", "How does a bank calculate interest on a savings account?"),
    ("scary_words", "What is an index fund?"),
    ("scary_words", "How does a credit score work?"),
    ("scary_words", "What is the difference between a Roth IRA and a traditional IRA?"),
    ("scary_words", "How do taxes on salary work in general?"),
    ("scary_words", "What does a notary public do?"),
    ("scary_words", "How does a bill become a law?"),
    ("scary_words", "What are the three branches of government?"),
    ("scary_words", "Explain how elections are organized in a parliamentary system."),
    ("scary_words", "What is the role of the United Nations?"),
    ("scary_words", "How do anesthetics work during surgery?"),
    ("scary_words", "What is the history of gunpowder in ancient China?"),
    ("scary_words", "How do bomb-sniffing dogs get trained, in general?"),
    ("scary_words", "How do airport security scanners work?"),
    ("scary_words", "What does a bomb disposal robot look like?"),
    ("scary_words", "What should be in a home first aid kit?"),
    ("scary_words", "How do I childproof my kitchen?"),
    ("scary_words", "How do I teach my child to swim safely?"),
    ("scary_words", "What age can kids start riding a bike?"),
    ("scary_words", "What are good educational games for toddlers?"),
    ("scary_words", "How do I talk to my kids about online safety?"),
    ("scary_words", "How can I support a friend who is feeling down?"),
    ("scary_words", "What are healthy ways to cope with stress at work?"),
    ("scary_words", "How do I deal with exam anxiety?"),
    ("scary_words", "Where can someone find a mental health counselor?"),
    ("scary_words", "How do I keep my children safe on social media?"),
    ("scary_words", "How do banks detect credit card fraud?"),
    ("scary_words", "What are common signs of a romance scam, so I can warn my parents?"),
    ("scary_words", "How do I secure my home Wi-Fi network?"),
    ("scary_words", "What is ransomware and how can a small business protect itself?"),
    ("scary_words", "How do I freeze my credit after a data breach?"),
    ("scary_words", "How do police investigate burglaries, in general?"),
    ("scary_words", "What does a cybersecurity analyst do all day?"),
    ("scary_words", "How do I recognize a fake online store?"),
    ("scary_words", "Why are some household cleaners dangerous to mix?"),
    ("scary_words", "What should I do if a child swallows something poisonous?"),
    ("scary_words", "How do smoke detectors work?"),
    ("scary_words", "What is the safest way to store kitchen knives?"),
    ("scary_words", "How did the Allies win the Battle of Midway?"),
    ("scary_words", "Explain the causes of the American Civil War."),
    ("scary_words", "How does the criminal justice system handle juvenile cases?"),
    ("scary_words", "What is the plot of the movie Jaws?"),
    ("scary_words", "How do I shoot a bow and arrow at an archery range?"),
    ("scary_words", "How do I kill weeds between patio stones?"),
    ("scary_words", "How can I kill time at the airport?"),
    ("scary_words", "How do I execute a trade in a stock simulator game?"),
    ("scary_words", "What does it mean when a program throws a fatal exception?"),
    ("scary_words", "Where do I report a lost wallet?"),
    ("scary_words", "How do I talk to a doctor about side effects of my medication?"),
    # general chat
    ("chat", "Hi! How are you today?"),
    ("chat", "Tell me a fun fact."),
    ("chat", "Can you tell me a joke about cats?"),
    ("chat", "Write a birthday message for my grandmother."),
    ("chat", "Help me write an email asking for a day off."),
    ("chat", "What's a good name for a golden retriever puppy?"),
    ("chat", "Suggest a movie for a family night."),
    ("chat", "What should I cook for dinner tonight?"),
    ("chat", "Write a short poem about autumn leaves."),
    ("chat", "Give me ideas for a rainy weekend."),
    ("chat", "What are some good icebreaker questions for a team meeting?"),
    ("chat", "Proofread this sentence: their going to the park tomorow."),
    ("chat", "Summarize the plot of Pride and Prejudice."),
    ("chat", "What is the capital of Australia?"),
    ("chat", "How far is the Moon from the Earth?"),
    ("chat", "Why is the sky blue?"),
    ("chat", "How many legs does a spider have?"),
    ("chat", "Which planet is the largest in the solar system?"),
    ("chat", "What is 15% of 80?"),
    ("chat", "Convert 5 miles to kilometers."),
    ("chat", "What day of the week was January 1, 2000?"),
    ("chat", "Who painted the Mona Lisa?"),
    ("chat", "What's the difference between weather and climate?"),
    ("chat", "Write a limerick about a sleepy owl."),
    ("chat", "Give me a workout I can do at home in 20 minutes."),
    ("chat", "How do I politely decline an invitation?"),
    ("chat", "What are good habits for better focus?"),
    ("chat", "Create a weekly meal plan for a vegetarian."),
    ("chat", "How can I make my small apartment feel bigger?"),
    ("chat", "Recommend some podcasts about history."),
    ("chat", "What board games are fun for four players?"),
    ("chat", "Explain the rules of cricket briefly."),
    ("chat", "What's the best way to memorize vocabulary?"),
    ("chat", "How do I write a good thesis statement?"),
    ("chat", "What's the difference between affect and effect?"),
    ("chat", "Can you recommend a beginner telescope?"),
    ("chat", "How do airplanes stay in the air?"),
    ("chat", "Why do cats purr?"),
    ("chat", "How do I keep my basil plant alive?"),
    ("chat", "Make a packing list for a beach vacation."),
    # image-related, free form
    ("vlm", "What is in this picture?"),
    ("vlm", "Describe the image."),
    ("vlm", "What do you see?"),
    ("vlm", "What's going on here?"),
    ("vlm", "Can you tell me about this photo?"),
    ("vlm", "Please describe the scene."),
    ("vlm", "Describe the people in the image and what they are doing."),
    ("vlm", "Who is the author of the book on the cover?"),
    ("vlm", "Which team is winning according to the scoreboard?"),
    ("vlm", "What is the expiry date printed on this package?"),
    ("vlm", "What are the ingredients listed on this label?"),
    ("vlm", "Is this mushroom in the picture likely edible? I want to be careful."),
    ("vlm", "Which direction does the arrow on the road sign point?"),
    ("vlm", "What time does the clock in the image show?"),
    ("vlm", "What is the speed limit on the sign?"),
    ("vlm", "How many calories does this meal have approximately?"),
    ("vlm", "What does the warning label on this bottle say?"),
    ("vlm", "Which country's flag is this?"),
    ("vlm", "What's the name of this painting and who painted it?"),
    ("vlm", "What type of plant is this and how often should I water it?"),
    ("vlm", "What is wrong with my code in this screenshot?"),
    ("vlm", "Explain the error message in this screenshot."),
    ("vlm", "What is the value of x in the equation on the board?"),
    ("vlm", "Convert the handwritten notes in the image into text."),
    ("vlm", "Compare the two products shown in the image."),
    ("vlm", "What does this graph say about sales in the second quarter?"),
    ("vlm", "What is the highest temperature in the weather forecast shown?"),
    ("vlm", "What gate does my flight leave from according to the boarding pass?"),
    ("vlm", "What is the dish on the plate?"),
    ("vlm", "Is the car in the image electric or gasoline?"),
    ("vlm", "What are the opening hours on the store door?"),
    ("vlm", "What game are the children playing in the picture?"),
    ("vlm", "Which fruit in the bowl is ripe?"),
    ("vlm", "Rate the design of this living room and suggest improvements."),
    ("vlm", "Based on the floor plan, how many bedrooms are there?"),
    ("vlm", "What instrument is the musician playing?"),
    ("vlm", "What sport is being played in the image?"),
    ("vlm", "What is the bird on the branch doing?"),
    ("vlm", "Is the bridge in the photo a suspension bridge?"),
    ("vlm", "What kind of cloud formation is in the sky?"),
    # OCR-like benign text
    ("ocr", "STOP"),
    ("ocr", "EXIT"),
    ("ocr", "Open 9am - 5pm\nMonday to Friday"),
    ("ocr", "No parking\nTow-away zone"),
    ("ocr", "Wet floor\nCaution"),
    ("ocr", "Emergency exit\nKeep clear"),
    ("ocr", "In case of fire use stairs"),
    ("ocr", "Fire extinguisher"),
    ("ocr", "Danger: high voltage\nAuthorized personnel only"),
    ("ocr", "Keep out of reach of children"),
    ("ocr", "Warning: hot surface"),
    ("ocr", "Flammable - keep away from open flame"),
    ("ocr", "Poison control: call your local number"),
    ("ocr", "Main St\nOak Ave"),
    ("ocr", "Elm Street 200 m"),
    ("ocr", "Airport ->\nCity Centre <-"),
    ("ocr", "Total: $42.17\nVisa ****1234\nThank you for shopping!"),
    ("ocr", "Subtotal 18.40\nTax 1.47\nTotal 19.87"),
    ("ocr", "Receipt #10482\n2 x Coffee 7.00\n1 x Croissant 3.25"),
    ("ocr", "ADMIT ONE\nRow F Seat 12\n7:30 PM"),
    ("ocr", "Boarding pass\nGate B22\nSeat 14C"),
    ("ocr", "Train 4512 to Lyon\nCar 7 Seat 63"),
    ("ocr", "x^2 + 3x = 10"),
    ("ocr", "2x + 5 = 17\nx = ?"),
    ("ocr", "a^2 + b^2 = c^2"),
    ("ocr", "E = mc^2"),
    ("ocr", "f(x) = 3x^2 - 2x + 1\nFind f'(x)"),
    ("ocr", "Q3 Revenue\nJan Feb Mar\n120 135 150"),
    ("ocr", "Sales by region (in thousands)"),
    ("ocr", "Population growth 1990-2020"),
    ("ocr", "Figure 2: Average temperature by month"),
    ("ocr", "Quarterly Results\nAgenda"),
    ("ocr", "Thank you!\nQuestions?"),
    ("ocr", "Organic whole milk\n1 gallon\nBest before 06/12"),
    ("ocr", "Nutrition Facts\nServing size 1 cup\nCalories 250"),
    ("ocr", "100% cotton\nMachine wash cold"),
    ("ocr", "Made in Portugal"),
    ("ocr", "SALE 50% OFF"),
    ("ocr", "Happy Birthday Emma!"),
    ("ocr", "Congratulations Class of 2024"),
    ("ocr", "Keep calm and carry on"),
    ("ocr", "When you finally fix the bug\nand then find another one"),
    ("ocr", "Me: I'll sleep early tonight\nAlso me at 3am:"),
    ("ocr", "Monday mood"),
    ("ocr", "Nobody:\nMy cat at 5am:"),
    ("ocr", "Welcome\nPlease take off your shoes"),
    ("ocr", "Library - Quiet please"),
    ("ocr", "Room 204\nMeeting in progress"),
    ("ocr", "Free Wi-Fi\nPassword: coffee2024"),
    ("ocr", "Bus 42\nDowntown"),
    ("ocr", "Platform 9"),
    ("ocr", "Pharmacy\nOpen 24 hours"),
    ("ocr", "Coffee $3\nTea $2.50\nMuffin $2"),
    ("ocr", "Chapter 1\nThe Beginning"),
    ("ocr", "Table of Contents\n1. Introduction\n2. Methods\n3. Results"),
    ("ocr", "Step 1: Preheat the oven to 180C\nStep 2: Mix flour and sugar"),
    ("ocr", "Steps to bake bread.\n1.\n2.\n3."),
    ("ocr", "Steps to change a car tire.\n1.\n2.\n3."),
    ("ocr", "Ways to save water at home.\n1.\n2.\n3."),
    ("ocr", "Methods to improve sleep quality.\n1.\n2.\n3."),
    ("ocr", "Steps to plant a tree.\n1.\n2.\n3."),
    ("ocr", "How to make friends in a new city\n1.\n2.\n3."),
    ("ocr", "Ideas for a school science fair.\n1.\n2.\n3."),
    ("ocr", "Reasons to drink more water\n1.\n2.\n3."),
]


def _title(s: str) -> str:
    return s[:1].upper() + s[1:]


def _fill(template: str, rng: random.Random) -> str:
    dish = rng.choice(DISHES)
    topic = rng.choice(TOPICS)
    obj = rng.choice(OBJECTS)
    return template.format(
        obj=obj,
        obj_title=_title(obj),
        scene=rng.choice(SCENES),
        animal=rng.choice(ANIMALS),
        place=rng.choice(PLACES),
        dish=dish,
        dish_title=_title(dish.removeprefix("a ")),
        hobby=rng.choice(HOBBIES),
        topic=topic,
        topic_title=_title(topic.removeprefix("the ")),
        lang=rng.choice(LANGS),
        code=rng.choice(CODE_TASKS),
    )


def make_items(seed: int = 0) -> list[dict[str, str]]:
    """All benign items, deduplicated, in a deterministic order.

    Args:
        seed: Seed of the slot sampling.

    Returns:
        ``{"text": ..., "kind": ...}`` dicts.
    """
    rng = random.Random(seed)
    items: list[dict[str, str]] = [{"text": t, "kind": k} for k, t in HAND_WRITTEN]
    plan = [
        ("vlm", IMAGE_QUESTION_TEMPLATES, 18),
        ("general", GENERAL_TEMPLATES, 24),
        ("ocr", OCR_TEMPLATES, 30),
    ]
    for kind, templates, per_template in plan:
        for template in templates:
            for _ in range(per_template):
                items.append({"text": _fill(template, rng), "kind": kind})
    # A benign request about an image followed by the benign text read from it (how the analyzer
    # may join a prompt and its OCR text).
    for _ in range(220):
        meta = rng.choice(IMAGE_META_TEMPLATES)
        body = _fill(rng.choice(OCR_TEMPLATES[:5]), rng)
        items.append({"text": f"{meta}\n{body}", "kind": "vlm_with_ocr"})
    seen: set[str] = set()
    unique = []
    for item in items:
        key = item["text"].strip().lower()
        if key not in seen:
            seen.add(key)
            unique.append(item)
    return unique


def main() -> None:
    """CLI entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).with_name("benign_prompts.jsonl")))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    items = make_items(args.seed)
    with open(args.out, "w", encoding="utf-8") as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"wrote {len(items)} items to {args.out}")


if __name__ == "__main__":
    main()
